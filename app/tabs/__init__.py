"""One module per tab: what the tab computes from the chosen models and faces, and the figures
and tables that show it. `app.service` picks the models and faces; `app.pages` lays the results out."""
import plotly.io as pio

# Every figure of the app is drawn on plotly's white template, set once here as the default: naming
# it in a figure's layout instead makes plotly copy and validate the whole template for that
# figure, about 9 ms of CPU per figure (a tenth of a verification's own work).
pio.templates.default = "plotly_white"
