"""The model summary printed when fit starts: Rich's table without the columns that say nothing."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import RichModelSummary
from lightning.pytorch.utilities.model_summary import get_formatted_model_size, get_human_readable_count


class CompactModelSummary(RichModelSummary):
    """Lightning's ``RichModelSummary`` that leaves out what carries no information: the FLOPs column and total
    when no FLOPs were measured (Lightning counts them only for a module with an ``example_input_array``; without
    one every row reads 0), and the count of modules in eval mode when there are none.

    Args:
        max_depth: module depth shown (-1: all, 0: none).
        **summarize_kwargs: ``header_style`` of the table.
    """

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        from rich import get_console
        from rich.table import Table

        columns = [(name, values) for name, values in summary_data if name != "FLOPs" or total_flops > 0]
        table = Table(header_style=summarize_kwargs.get("header_style", "bold magenta"))
        for name, _ in columns:  # the first is the row number, " "
            numeric = name in ("Params", "Params per Device", "FLOPs", "In sizes", "Out sizes")
            table.add_column(
                name,
                justify="right" if numeric else "left",
                no_wrap=name == "Name",
                style="dim" if name == " " else None,
            )
        for row in zip(*(values for _, values in columns)):
            table.add_row(*row)
        console = get_console()
        console.print(table)

        lines = [
            ("Trainable params", get_human_readable_count(int(trainable_parameters))),
            ("Non-trainable params", get_human_readable_count(int(total_parameters - trainable_parameters))),
            ("Total params", get_human_readable_count(int(total_parameters))),
            ("Total estimated model params size (MB)", get_formatted_model_size(model_size)),
        ]
        if total_training_modes.get("eval", 0):
            lines.append(("Modules in eval mode", str(total_training_modes["eval"])))
        if total_flops > 0:
            lines.append(("Total FLOPs", get_human_readable_count(total_flops)))
        for label, value in lines:
            console.print(f"[bold]{label}[/]: {value}")
