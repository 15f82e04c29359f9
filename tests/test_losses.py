"""Classification heads: hand-computed logits on tiny 2-d cases, NPCFace's hard mask and
cooperative margin, adaptive state (SphereFace lambda, CurricularFace t, AdaCos s), the
registry, and that every registered head trains a linear probe with finite gradients.

Class weights and embeddings live in the plane at known angles (degrees), so every
expected cosine is math.cos of an angle difference, computed here independently of the code.
"""
import math

import pytest
import torch

from train.losses import LOSSES, build_loss
from train.losses.base import arc_margin, positive, with_positive

pytestmark = pytest.mark.fast  # needs no face data: the fast tier (pytest -m fast)

NAMES = ["adacos", "am-softmax", "arcface", "arcnegface", "cosface", "curricularface", "mv-softmax",
         "npcface", "softmax", "sphereface"]


def unit(degrees):
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


def planar_head(name, class_angles, **options):
    """A float64 head whose class k points at class_angles[k] degrees."""
    head = build_loss(name, len(class_angles), embedding_dim=2, **options).double()
    with torch.no_grad():
        head.weight.copy_(torch.tensor([unit(a) for a in class_angles], dtype=torch.float64))
    return head


def embed(angles, norm=1.0):
    return torch.tensor([[norm * v for v in unit(a)] for a in angles], dtype=torch.float64)


def cosd(degrees):
    return math.cos(math.radians(degrees))


def assert_logits(actual, expected):
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-9)


CLASSES = [0, 30, 80, 150]  # used by several cases below


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are tiny: intra-op threads only contend for the shared CPU cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---- registry -----------------------------------------------------------------------------


def test_registry_lists_every_loss():
    assert list(LOSSES) == NAMES


def test_unknown_loss_lists_known_names():
    with pytest.raises(KeyError) as error:
        build_loss("focal", 10)
    assert "'focal'" in str(error.value) and "known: " + ", ".join(NAMES) in str(error.value)


def test_build_loss_passes_options():
    head = build_loss("cosface", 7, embedding_dim=8, s=30.0, m=0.4)
    assert (head.s, head.m, tuple(head.weight.shape)) == (30.0, 0.4, (7, 8))
    with pytest.raises(TypeError):
        build_loss("arcface", 7, margin=0.5)


# ---- hand-computed logits -----------------------------------------------------------------


def test_softmax_is_a_plain_linear_layer():
    head = planar_head("softmax", [0, 90])
    with torch.no_grad():
        head.bias.copy_(torch.tensor([0.5, -1.0]))
    x = torch.tensor([[2.0, 3.0]], dtype=torch.float64)
    assert_logits(head(x, torch.tensor([0])), [[2.5, 2.0]])


@pytest.mark.parametrize("name,options,s,m", [
    ("cosface", {}, 64.0, 0.35), ("am-softmax", {}, 64.0, 0.35),
    ("cosface", {"s": 30.0, "m": 0.4}, 30.0, 0.4)])
def test_cosface(name, options, s, m):
    head = planar_head(name, [0, 60, 150], **options)
    logits = head(embed([20], norm=3.0), torch.tensor([0]))
    assert_logits(logits, [[s * (cosd(20) - m), s * cosd(40), s * cosd(130)]])


def test_arcface_margin_and_fallback_past_pi():
    head = planar_head("arcface", [0, 90])
    # theta_y = 20 deg; theta_y = 170 deg (+0.5 rad passes pi: cos(theta) - m sin m); 100 deg (does not).
    logits = head(embed([20, 170, 100]), torch.tensor([0, 0, 0]))
    assert_logits(logits, [
        [64 * math.cos(math.radians(20) + 0.5), 64 * cosd(70)],
        [64 * (cosd(170) - 0.5 * math.sin(0.5)), 64 * cosd(80)],
        [64 * math.cos(math.radians(100) + 0.5), 64 * cosd(10)]])
    easy = planar_head("arcface", [0, 90], easy_margin=True)(embed([20, 100]), torch.tensor([0, 0]))
    assert_logits(easy[:, 0], [64 * math.cos(math.radians(20) + 0.5), 64 * cosd(100)])


def test_sphereface_psi_and_lambda_annealing():
    x, labels = embed([20, 100], norm=3.0), torch.tensor([0, 0])
    # lambda = 0: f_y = ||x|| psi(theta), psi = (-1)^k cos(4 theta) - 2k, k = floor(4 theta / pi).
    pure = planar_head("sphereface", [0, 90], base=0.0, lambda_min=0.0)(x, labels)
    assert_logits(pure, [[3 * cosd(80), 3 * cosd(70)], [3 * (cosd(400) - 4), 3 * cosd(10)]])

    head = planar_head("sphereface", [0, 90])
    head(x, labels)  # first training forward: lambda = 1000 / (1 + 0.12)
    lam = 1000 / 1.12
    annealed = head.eval()(x, labels)  # evaluation does not advance the counter
    assert int(head.iteration) == 1 and head.lambda_ == pytest.approx(lam)
    psi = [cosd(80), cosd(400) - 4]
    assert_logits(annealed[:, 0], [3 * (lam * cosd(20) + psi[0]) / (1 + lam),
                                   3 * (lam * cosd(100) + psi[1]) / (1 + lam)])
    head.iteration.fill_(10 ** 6)
    assert head.lambda_ == 5.0


def test_mv_softmax_am_and_arc():
    x, labels = embed([10]), torch.tensor([0])
    # AM: target cos10 - 0.35 = 0.635; the class at 30 deg (cos20 = 0.94) is mis-classified,
    # the one at 80 deg (cos70) is not.
    head = planar_head("mv-softmax", CLASSES)
    assert_logits(head(x, labels), [[32 * (cosd(10) - 0.35), 32 * (1.2 * cosd(20) + 0.2), 32 * cosd(70),
                                     32 * cosd(140)]])
    assert head.last["hard_mask"].tolist() == [[False, True, False, False]]
    arc = planar_head("mv-softmax", CLASSES, margin_type="arc", t=1.3, s=64.0)
    assert arc.m == 0.5
    assert_logits(arc(x, labels), [[64 * math.cos(math.radians(10) + 0.5), 64 * (1.3 * cosd(20) + 0.3),
                                    64 * cosd(70), 64 * cosd(140)]])


def test_arcnegface_reweights_every_negative():
    head = planar_head("arcnegface", CLASSES)
    target = math.cos(math.radians(10) + 0.5)
    expected = [64 * target]
    for c in (cosd(20), cosd(70), cosd(140)):
        t = 1.2 * math.exp(-(c - target) ** 2 / 2)
        expected.append(64 * (t * c + t - 1))
    assert_logits(head(embed([10]), torch.tensor([0])), [expected])


def test_curricularface_t_follows_positive_cosines():
    head = planar_head("curricularface", CLASSES)
    x, labels = embed([10, 110]), torch.tensor([0, 2])  # theta_y = 10 and 30 deg
    targets = [math.cos(math.radians(10) + 0.5), math.cos(math.radians(30) + 0.5)]
    t = 0.01 * (cosd(10) + cosd(30)) / 2
    logits = head(x, labels)
    assert head.t.item() == pytest.approx(t)
    # hard: sample 0 -> class at 30 deg (cos20 > cos(10 deg + 0.5));
    #       sample 1 -> class at 150 deg (cos40 > cos(30 deg + 0.5))
    assert_logits(logits, [
        [64 * targets[0], 64 * cosd(20) * (t + cosd(20)), 64 * cosd(70), 64 * cosd(140)],
        [64 * cosd(110), 64 * cosd(80), 64 * targets[1], 64 * cosd(40) * (t + cosd(40))]])
    head(x, labels)
    assert head.t.item() == pytest.approx(0.99 * t + t)
    head.eval()(x, labels)
    assert head.t.item() == pytest.approx(0.99 * t + t)


def test_adacos_scale_update():
    head = planar_head("adacos", CLASSES)
    assert head.s.item() == pytest.approx(math.sqrt(2) * math.log(3))
    s0 = head.s.item()  # the buffer was created in float32
    x, labels = embed([10, 110, 200]), torch.tensor([0, 2, 3])  # theta_y = 10, 30, 50 deg -> median 30
    cos = [[cosd(a - c) for c in CLASSES] for a in (10, 110, 200)]
    b_avg = sum(math.exp(s0 * cos[i][j]) for i in range(3) for j in range(4) if j != labels[i]) / 3
    s1 = math.log(b_avg) / cosd(30)
    assert_logits(head(x, labels), [[s1 * c for c in row] for row in cos])
    assert head.s.item() == pytest.approx(s1)
    # theta_y = 50, 60, 70 deg: the median is capped at pi/4.
    x, labels = embed([50, 90, 220]), torch.tensor([0, 1, 3])
    cos = [[cosd(a - c) for c in CLASSES] for a in (50, 90, 220)]
    b_avg = sum(math.exp(s1 * cos[i][j]) for i in range(3) for j in range(4) if j != labels[i]) / 3
    head(x, labels)
    assert head.s.item() == pytest.approx(math.log(b_avg) / cosd(45))
    head.eval()(x, labels)
    assert head.s.item() == pytest.approx(math.log(b_avg) / cosd(45))
    fixed = planar_head("adacos", CLASSES, dynamic=False)
    fixed(x, labels)
    assert fixed.s.item() == pytest.approx(s0)


# ---- NPCFace ------------------------------------------------------------------------------

# Ground truth at 0 deg; negatives at 70, 95, -25 and 150 deg. A sample at 40 deg has
# cos(theta_y) = cos40 and negative cosines cos30, cos55, cos65, cos110.
NPC_CLASSES = [0, 70, 95, -25, 150]
THETA_Y = math.radians(40)
NEG_COS = [cosd(30), cosd(55), cosd(65), cosd(110)]


def npc_expected(hard, margin, s=64.0, t=1.1, alpha=0.25):
    negatives = [s * (t * c + alpha) if h else s * c for c, h in zip(NEG_COS, hard)]
    return [s * math.cos(THETA_Y + margin)] + negatives


def test_npcface_premise():
    # With m0 the classes at 70 and 95 deg are hard, -25 deg is not; with the margin that
    # mask implies, -25 deg becomes hard too; 150 deg never is.
    m_after_first = 0.4 + 0.2 * (NEG_COS[0] + NEG_COS[1]) / 2
    assert NEG_COS[1] > math.cos(THETA_Y + 0.4) > NEG_COS[2] > math.cos(THETA_Y + m_after_first) > NEG_COS[3]


@pytest.mark.parametrize("options,hard", [
    ({}, [True, True, True, False]),                                            # adaptive (default)
    ({"hard_margin": "fixed"}, [True, True, False, False]),                     # mask with m0
    ({"hard_margin": "fixed", "mask_margin": 0.5}, [True, True, True, False])])  # public code's mask
def test_npcface_hard_mask_margin_and_logits(options, hard):
    head = planar_head("npcface", NPC_CLASSES, **options)
    logits = head(embed([40, 155]), torch.tensor([0, 4]))
    hard_cos = [c for c, h in zip(NEG_COS, hard) if h]
    margin = 0.4 + 0.2 * sum(hard_cos) / len(hard_cos)
    assert head.last["hard_mask"].tolist() == [[False] + hard, [False] * 5]
    torch.testing.assert_close(head.last["margin"], torch.tensor([margin, 0.4], dtype=torch.float64))
    # the sample 5 deg from its class at 150 deg has no hard class (its nearest negative, at
    # 95 deg, has cos60 < cos(5 deg + 0.5)), so its margin is m0
    easy = [64 * cosd(155 - a) for a in NPC_CLASSES[:4]] + [64 * math.cos(math.radians(5) + 0.4)]
    assert_logits(logits, [npc_expected(hard, margin), easy])
    assert_logits(head.last["cos_pos"], [cosd(40), cosd(5)])


def test_npcface_options():
    head = planar_head("npcface", NPC_CLASSES, t=1.3, alpha=0.2, m0=0.3, m1=0.5, s=30.0)
    logits = head(embed([40]), torch.tensor([0]))
    hard = [True, True, True, False]
    assert NEG_COS[2] > math.cos(THETA_Y + 0.3 + 0.5 * (NEG_COS[0] + NEG_COS[1]) / 2)  # still hard here
    margin = 0.3 + 0.5 * sum(NEG_COS[:3]) / 3
    assert_logits(logits, [npc_expected(hard, margin, s=30.0, t=1.3, alpha=0.2)])


def test_npcface_positive_margin_only_when_positive_cos():
    # theta_y = 120 deg: cos < 0, so f_y = s cos(theta_y) and every negative above -0.5 is hard.
    options = {"positive_margin_only_when_positive_cos": True}
    head = planar_head("npcface", NPC_CLASSES, **options)
    logits = head(embed([120]), torch.tensor([0]))
    neg = [cosd(50), cosd(25), cosd(145), cosd(30)]
    hard = [c > cosd(120) for c in neg]
    assert hard == [True, True, False, True]
    negatives = [64 * (1.1 * c + 0.25) if h else 64 * c for c, h in zip(neg, hard)]
    assert_logits(logits, [[64 * cosd(120)] + negatives])
    # Without the option the margined positive is lower still: cos(120 deg + m0) = -0.80 makes
    # three classes hard, the margin they imply (0.56) makes the class at -25 deg (cos145) hard too.
    default = planar_head("npcface", NPC_CLASSES)
    logits = default(embed([120]), torch.tensor([0]))
    first_margin = 0.4 + 0.2 * (neg[0] + neg[1] + neg[3]) / 3
    assert math.cos(math.radians(120) + 0.4) > neg[2] > math.cos(math.radians(120) + first_margin)
    margin = 0.4 + 0.2 * sum(neg) / 4
    assert default.last["hard_mask"].tolist() == [[False, True, True, True, True]]
    assert logits[0, 0].item() == pytest.approx(64 * math.cos(math.radians(120) + margin))


@pytest.mark.parametrize("options, detached", [({}, True), ({"detach_margin": True}, True),
                                               ({"detach_margin": False}, False)])
def test_npcface_margin_gradient_reaches_hard_negatives_only_when_asked(options, detached):
    """Default (FaceX-Zoo): m_i is a constant for backpropagation, so the positive logit pulls
    only on the ground-truth class; detach_margin=False also reaches the hard classes via m_i."""
    head = planar_head("npcface", NPC_CLASSES, **options)
    assert head.detach_margin == detached
    head(embed([40]), torch.tensor([0]))[0, 0].backward()  # the positive logit only
    grad_norms = head.weight.grad.norm(dim=1)
    assert grad_norms[0] > 0 and grad_norms[4] == 0   # ground truth; never-hard class
    assert bool((grad_norms[1:4] == 0).all()) == detached  # hard classes reach f_y only through m_i


def test_npcface_detached_margin_gradient_is_the_constant_margin_gradient():
    """With the default, d loss / d x equals the gradient of the same loss with m_i frozen at
    its value (Eq. 11 evaluated once, then treated as a number)."""
    labels = torch.tensor([0, 0, 0])
    x = embed([40, 5, 120], norm=2.0).requires_grad_()
    head = planar_head("npcface", NPC_CLASSES)
    head.loss(x, labels)[0].backward()
    frozen = head.last["margin"]
    y = x.detach().clone().requires_grad_()
    cos = head.cosine(y)
    mask = head.last["hard_mask"]
    logits = 64 * with_positive(torch.where(mask, 1.1 * cos + 0.25, cos), labels,
                                arc_margin(positive(cos, labels), frozen))
    torch.nn.functional.cross_entropy(logits, labels).backward()
    torch.testing.assert_close(x.grad, y.grad, rtol=0, atol=1e-12)


def test_npcface_gradient_matches_finite_differences():
    head = planar_head("npcface", NPC_CLASSES, detach_margin=False)  # the full gradient, through m_i
    labels = torch.tensor([0, 0, 0])
    x = embed([40, 5, 120], norm=2.0).requires_grad_()
    assert torch.autograd.gradcheck(lambda e: head.loss(e, labels)[0], (x,))


# ---- every head ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_every_loss_trains_a_linear_probe(name):
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 16, generator=generator)
    labels = torch.arange(5).repeat_interleave(8)
    inputs = centres[labels] + 0.3 * torch.randn(40, 16, generator=generator)
    torch.manual_seed(0)
    probe, head = torch.nn.Linear(16, 8), build_loss(name, 5, embedding_dim=8)
    parameters = list(probe.parameters()) + list(head.parameters())
    velocities = [torch.zeros_like(p) for p in parameters]
    losses = []
    for _ in range(25):  # SGD, lr 0.05, momentum 0.9, by hand (torch.optim's first step imports dynamo: slow)
        loss, _ = head.loss(probe(inputs), labels)
        grads = torch.autograd.grad(loss, parameters)
        assert all(torch.isfinite(g).all() for g in grads)
        with torch.no_grad():
            for p, v, g in zip(parameters, velocities, grads):
                p.sub_(0.05 * v.mul_(0.9).add_(g))
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * losses[0], losses
    head.eval()
    with torch.no_grad():
        cos = torch.nn.functional.normalize(probe(inputs)) @ torch.nn.functional.normalize(head.weight).T
    assert (cos.argmax(1) == labels).float().mean() > 0.9


@pytest.mark.parametrize("name", NAMES)
def test_gradients_finite_where_embeddings_hit_class_weights(name):
    torch.manual_seed(0)
    head = build_loss(name, 3, embedding_dim=4)
    labels = torch.tensor([0, 1, 2, 0])
    x = torch.cat([head.weight[:2], -head.weight[2:], head.weight[1:2]]).detach().requires_grad_()
    loss, logits = head.loss(x, labels)
    loss.backward()
    assert torch.isfinite(logits).all() and torch.isfinite(loss)
    assert torch.isfinite(x.grad).all() and torch.isfinite(head.weight.grad).all()
