from rich.console import Console

from instanas_gym.utils.display import COLUMNS, markdown_table, metrics_table, results_table


def _render(renderable, width: int = 80) -> str:
    console = Console(width=width, record=True, file=open("/dev/null", "w"))
    console.print(renderable)
    return console.export_text()


def test_results_table_is_legible_at_80_columns():
    """Every column present, no header or value cut to an ellipsis, accuracy shown as a percentage."""
    row = {key: 1.0 for key, *_ in COLUMNS} | {"accuracy": 0.7559, "macs": 9.85e6}
    text = _render(results_table({"InstaNAS (REINFORCE)": row, "MobileNetV2 path": row, "all ops": row}, "title"))
    assert "…" not in text and max(map(len, text.splitlines())) <= 80
    tables = text.split("acc %: test accuracy")[0]  # the tables, without the legend
    headers = [line.split() for line in tables.splitlines() if line.split()[:1] == ["policy"]]
    shown = " ".join(" ".join(h) for h in headers)
    for _, short, _, _ in COLUMNS:
        assert short in shown and f"{short}:" in text
    assert "75.59" in text and "9.85" in text and "MobileNetV2" in text and "(REINFORCE)" in text
    assert "| 75.59 |" in markdown_table({"x": row})


def test_metrics_table_shows_percent():
    text = _render(metrics_table({"test_acc_mobilenetv2": 0.9, "test_acc_all_ops": 0.925}, "t"))
    assert "90.00%" in text and "92.50%" in text
