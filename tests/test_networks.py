"""The network: the classic MNIST CNN by default, scaled by width and depth, logits out, backbone and head apart."""

import pytest
import torch
from torch import nn

from project.data import Split
from project.errors import UserInputError
from project.networks import ConvNet


def layer_shapes(network: nn.Module) -> list[tuple[str, tuple[int, int]]]:
    shapes = []
    for module in network.modules():
        if isinstance(module, nn.Conv2d):
            shapes.append(("conv", (module.in_channels, module.out_channels)))
        elif isinstance(module, nn.Linear):
            shapes.append(("fc", (module.in_features, module.out_features)))
    return shapes


def test_default_is_the_classic_mnist_cnn():
    network = ConvNet()
    assert layer_shapes(network) == [
        ("conv", (1, 32)),
        ("conv", (32, 64)),
        ("fc", (9216, 128)),
        ("fc", (128, 10)),
    ]
    assert sum(p.numel() for p in network.parameters()) == 1_199_882
    dropouts = [m.p for m in network.modules() if isinstance(m, nn.Dropout)]
    assert dropouts == [0.25, 0.5]
    assert not any(isinstance(m, nn.Dropout2d) for m in network.modules())


def test_returns_unnormalised_logits_of_shape_batch_by_outputs():
    network = ConvNet().eval()
    logits = network(torch.randn(4, 1, 28, 28))
    assert logits.shape == (4, 10)
    # log_softmax output would have logsumexp == 0 in every row; raw logits do not.
    assert not torch.allclose(logits.logsumexp(dim=1), torch.zeros(4), atol=1e-3)


def test_backbone_and_head_are_separate_attributes():
    network = ConvNet(num_outputs=3)
    assert isinstance(network.head, nn.Linear) and network.head.out_features == 3
    assert network.backbone(torch.randn(2, 1, 28, 28)).shape == (2, network.feature_size)


def test_width_and_depth_scale_the_network():
    wide = ConvNet(width=64, hidden_size=256)
    assert layer_shapes(wide)[:2] == [("conv", (1, 64)), ("conv", (64, 128))]
    deep = ConvNet(depth=3, padding=1)
    assert [shape for kind, shape in layer_shapes(deep) if kind == "conv"] == [
        (1, 32),
        (32, 64),
        (64, 64),
        (64, 128),
        (128, 128),
        (128, 256),
    ]
    assert deep(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_other_image_sizes_and_channels():
    network = ConvNet(in_channels=3, image_size=32, num_outputs=1)
    assert network(torch.randn(2, 3, 32, 32)).shape == (2, 1)


def test_a_network_too_deep_for_the_image_is_refused_with_the_reason():
    with pytest.raises(UserInputError, match=r"28x28 image shrinks to nothing in conv block 3 of 3.*padding=1"):
        ConvNet(depth=3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"width": 0}, "width must be a positive integer, got 0"),
        ({"conv_dropout": 1.0}, r"conv_dropout must lie in \[0, 1\), got 1.0"),
        ({"padding": 2}, "padding must be 0 or 1"),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs, message):
    with pytest.raises(UserInputError, match=message):
        ConvNet(**kwargs)


class TinyClassifier(nn.Module):
    """A network of someone else's: features, then a final linear layer called ``fc``."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(4, 1000)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(images))


def test_any_module_with_a_final_linear_layer_keeps_the_network_contract():
    from project.networks import AdaptedNetwork, Network

    network = AdaptedNetwork(TinyClassifier(), final_layer="fc", num_outputs=5, in_channels=3, image_size=16)
    assert isinstance(network, Network) and isinstance(network.backbone.fc, nn.Identity)
    assert (network.head.in_features, network.head.out_features) == (4, 5)
    assert network(torch.randn(2, 3, 16, 16)).shape == (2, 5)
    with pytest.raises(UserInputError, match=r"features is a Sequential, not the nn\.Linear head"):
        AdaptedNetwork(TinyClassifier(), final_layer="features", num_outputs=5, in_channels=3, image_size=16)


def test_an_adapted_network_fine_tunes_from_its_own_pretrained_backbone(tmp_path, fake_data_dir, run_dir):
    from functools import partial

    from helpers import quiet_trainer

    from project.data import MNISTDataModule
    from project.networks import AdaptedNetwork
    from project.training.finetuning import FineTuning, load_pretrained_backbone
    from project.training.task_module import TaskModule

    class Grey(TinyClassifier):
        def __init__(self) -> None:
            super().__init__()
            self.features[0] = nn.Conv2d(1, 4, 3)

    source = AdaptedNetwork(Grey(), final_layer="fc", num_outputs=3, in_channels=1, image_size=28)
    torch.save(source.state_dict(), tmp_path / "weights.pt")
    network = AdaptedNetwork(Grey(), final_layer="fc", num_outputs=10, in_channels=1, image_size=28)
    assert "Loaded 2 backbone tensors" in load_pretrained_backbone(network, tmp_path / "weights.pt")
    frozen = FineTuning(freeze_backbone_epochs=1)
    module = TaskModule(network, optimizer=partial(torch.optim.SGD, lr=0.1), finetuning=frozen)
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=1, default_root_dir=run_dir)
    trainer.fit(module, MNISTDataModule(data_dir=str(fake_data_dir), split=Split(val_size=100)))
    assert torch.equal(network.backbone.features[0].weight, source.backbone.features[0].weight)  # frozen
    trainer.save_checkpoint(run_dir / "adapted.ckpt")
    fresh = AdaptedNetwork(Grey(), final_layer="fc", num_outputs=10, in_channels=1, image_size=28)
    loaded = TaskModule.load_from_checkpoint(run_dir / "adapted.ckpt", network=fresh)
    assert torch.equal(loaded.network.head.weight, network.head.weight)
