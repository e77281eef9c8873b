import json

from helpers.core.plots import loss_curves


def test_loss_curves_plot_training_and_validation_losses_over_their_own_rows(tmp_path):
    log = tmp_path / "log.jsonl"
    rows = [{"step": s, "loss": 1 / s, "lr": 1e-3} for s in range(10, 110, 10)]
    rows.insert(5, {"step": 50, "val_loss": 0.4})  # a validation row: no training loss, no lr
    rows.append({"step": 100, "val_loss": 0.2})
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    lines = {line.get_label(): line for line in loss_curves(log, smooth=1).axes[0].lines}
    assert set(lines) == {"loss", "val_loss"}  # the learning rate is not a loss
    assert list(lines["val_loss"].get_xdata()) == [50, 100] and len(lines["loss"].get_xdata()) == 10
    assert len(loss_curves(tmp_path / "missing.jsonl").axes[0].lines) == 0  # a run that has not logged yet
