"""FeatureHook records the last Linear's input on the caller's own forwards, with no extra pass."""

import pytest
import torch
from torch import nn

from wdro_finetune.models.features import FeatureHook, extract_features, last_linear


class SmallCNN(nn.Module):
    """conv -> relu -> pool -> flatten -> fc1 -> relu -> fc2 (the classifier); counts its forward calls."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc1 = nn.Linear(16, 8)
        self.fc2 = nn.Linear(8, 5)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.fc2(self.penultimate(x))

    def penultimate(self, x):
        return torch.relu(self.fc1(self.pool(torch.relu(self.conv(x))).flatten(1)))


@pytest.fixture
def model():
    torch.manual_seed(0)
    return SmallCNN()


def test_hook_returns_exactly_the_last_linear_input_without_extra_forward(model):
    x1, x2 = torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8)
    with FeatureHook(model) as hook:
        logits1 = model(x1)
        logits2 = model(x2)
    assert model.calls == 2
    h1, h2 = hook.pop()
    assert hook.pop() == []
    torch.testing.assert_close(h1, model.penultimate(x1), rtol=0, atol=0)
    torch.testing.assert_close(h2, model.penultimate(x2), rtol=0, atol=0)
    torch.testing.assert_close(model.fc2(h1), logits1)
    assert hook.layer is model.fc2 and h1.shape == (4, 8)


def test_captured_features_keep_the_autograd_graph(model):
    with FeatureHook(model) as hook:
        model(torch.rand(2, 3, 8, 8))
    (h,) = hook.pop()
    h.norm().backward()
    assert model.conv.weight.grad is not None and model.conv.weight.grad.abs().sum() > 0
    assert model.fc2.weight.grad is None  # the classifier is downstream of h


def test_hook_is_inactive_outside_the_block_and_while_paused(model):
    hook = FeatureHook(model)
    model(torch.rand(2, 3, 8, 8))  # not attached yet
    with hook:
        with hook.paused():
            model(torch.rand(2, 3, 8, 8))
        model(torch.rand(3, 3, 8, 8))
    model(torch.rand(2, 3, 8, 8))  # detached again
    captured = hook.pop()
    assert [h.shape[0] for h in captured] == [3]
    assert not hook.attached and len(model.fc2._forward_pre_hooks) == 0


def test_input_of_rank_above_2_is_flattened_per_sample():
    head = nn.Sequential(nn.Conv2d(1, 2, 1), nn.Linear(3, 4))  # Linear over the last axis
    x = torch.rand(5, 1, 2, 3)
    with FeatureHook(head) as hook:
        head(x)
    (h,) = hook.pop()
    assert h.shape == (5, 2 * 2 * 3)
    torch.testing.assert_close(h, head[0](x).reshape(5, -1))


def test_explicit_layer_and_missing_linear():
    with pytest.raises(ValueError, match="no nn.Linear"):
        FeatureHook(nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU()))
    convnet = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Conv2d(4, 2, 1))
    x = torch.rand(2, 3, 4, 4)
    with FeatureHook(convnet, layer=convnet[2]) as hook:
        convnet(x)
    torch.testing.assert_close(hook.pop()[0], torch.relu(convnet[0](x)).flatten(1))


def test_last_linear_follows_registration_order(model):
    assert last_linear(model) is model.fc2


def test_extract_features_uses_features_method_or_one_hooked_pass(model):
    x = torch.rand(3, 3, 8, 8)
    torch.testing.assert_close(extract_features(model, x), model.penultimate(x))
    assert model.calls == 1

    class WithFeatures(SmallCNN):
        def features(self, x):
            return self.penultimate(x)

    torch.manual_seed(0)
    other = WithFeatures()
    torch.testing.assert_close(extract_features(other, x), other.penultimate(x))
    assert other.calls == 0


class _ConvHeadPlugin(nn.Module):
    """A plugin-style model with no nn.Linear: forward(x) = head(features(x)), head a 1x1 convolution."""

    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Conv2d(6, 4, 1)
        self.calls = 0

    def features(self, x):
        self.calls += 1
        return self.trunk(x).flatten(1)

    def forward(self, x):
        return self.head(self.features(x)[:, :, None, None]).flatten(1)


def test_hook_records_a_plugin_features_method_without_extra_forward():
    model = _ConvHeadPlugin().train()
    x = torch.rand(5, 3, 8, 8)
    with FeatureHook(model, training_only=True) as hook:
        model(x)
        with hook.paused():
            model(x)
        model.eval()
        model(x)  # eval-mode forwards are skipped with training_only
    assert model.calls == 3
    (h,) = hook.pop()
    torch.testing.assert_close(h, model.trunk(x).flatten(1))
    assert h.requires_grad and "features" not in model.__dict__  # the method is restored on exit
    with FeatureHook(model) as hook:
        model(x)
    assert len(hook.pop()) == 1
