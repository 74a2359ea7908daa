"""`train.freeze: backbone`: while frozen, optimizer steps leave every backbone tensor bitwise as
loaded (BatchNorm running statistics included) and train the classifier; after the switch the
whole network trains. (Resume across the switch: tests/train/test_resume.py; DDP across it:
tests/train/test_ddp.py; refused settings: tests/test_params.py.)"""

from __future__ import annotations

import pytest
import torch
from support.helpers import shrunk_params
from support.synthetic_prepared import write_prepared

from tinyclf.model.architectures import create_model
from tinyclf.params import params_from_dict
from tinyclf.train.distributed import DistInfo
from tinyclf.train.engine import Progress
from tinyclf.train.freeze import BackboneFreeze
from tinyclf.train.recipe import TrainingError
from tinyclf.train.setup import enter_epoch, stage_loop

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CPU = DistInfo(rank=0, world_size=1, local_rank=0, local_world_size=1, device=torch.device("cpu"))


def _loop(tmp_path, **overrides):
    prepared = write_prepared(tmp_path / "prepared", num_classes=4, train_per_class=16, val_per_class=4)
    source = tmp_path / "source.pt"
    torch.save(create_model("test_resnet", 7).state_dict(), source)  # another class count: a new classifier
    tree = shrunk_params(train__model="test_resnet", train__crop="pad_crop", train__batch_size=16, train__lr=0.4,
                         train__epochs=3, train__warmup_epochs=0, train__init=str(source), train__freeze="backbone",
                         train__freeze_epochs=1, train__ema=False, **overrides)
    return stage_loop(prepared, params_from_dict(tree).train, CPU)


def _train_epoch(loop, epoch: int, progress: Progress) -> None:
    progress.epoch = epoch
    loop.steps(loop.data.train_batches.epoch(epoch), loop.data.plan.micro_per_epoch, progress=progress)
    progress.end_epoch(1.0, 1)


def test_frozen_backbone_stays_bitwise_as_loaded_while_the_classifier_learns_then_all_train(tmp_path):
    loop = _loop(tmp_path, train__weight_decay=0.05, train__momentum=0.9)
    model = loop.parts.model
    classifier = loop.parts.freeze.classifier
    assert classifier == {"fc.weight", "fc.bias"}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    progress = Progress()
    _train_epoch(loop, 0, progress)
    after = {k: v.clone() for k, v in model.state_dict().items()}
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    # Only the classifier moved: no step, no weight decay, no BatchNorm statistics for the rest.
    assert moved == {"fc.weight", "fc.bias"}, moved
    assert any(k.endswith("running_mean") for k in before)
    assert all(not m.training for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d))

    # The switch: epoch 1 trains everything; the backbone's optimizer state starts empty then.
    state = loop.parts.optimizer.state
    assert all(not state.get(p) for n, p in model.named_parameters() if n not in classifier)
    assert enter_epoch(loop.parts, 1) and not enter_epoch(loop.parts, 1)  # (one process: nothing to wrap again)
    _train_epoch(loop, 1, progress)
    final = model.state_dict()
    still = {k for k in after if torch.equal(after[k], final[k]) and final[k].is_floating_point()}
    assert not still, still  # every weight, bias and running statistic moved
    assert all(m.training for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


@pytest.mark.parametrize("classifier", [set(), {"weight", "bias"}])
def test_a_model_without_a_separate_classifier_is_refused_in_one_line(classifier):
    """No classifier found, or one that is the whole model: nothing to train alone, or nothing to freeze."""
    tree = shrunk_params(train__model="test_resnet", train__init="x.pt", train__freeze="backbone",
                         train__freeze_epochs=1)
    with pytest.raises(TrainingError, match=r"^train.freeze=backbone: test_resnet has no separate classifier layer"):
        BackboneFreeze.from_params(params_from_dict(tree).train, torch.nn.Linear(3, 4), classifier)
