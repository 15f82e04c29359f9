"""One module per tab: what the tab computes from the chosen models and faces, and the figures
and tables that show it. `app.service` picks the models and faces; `app.pages` lays the results out."""
