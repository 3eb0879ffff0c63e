"""A stage's log keeps soraflow's, Prefect's and MLflow's lines and drops the libraries' chatter.

Before, every ``make demo`` log held a line per Prefect API request (httpx at INFO, through the
root logger the CLI configures) and 217 great-expectations lines per curation (each function GX
registers on import, at INFO). The check runs in a fresh interpreter: GX logs only on its first
import, which an earlier test in this process may already have done.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import logging
    import pandas as pd
    from soraflow.cli import setup_logging
    from soraflow.curation.validation import validate_clips

    setup_logging()
    validate_clips(pd.DataFrame(), "validation-out", min_rows=1)  # fails: no rows; GX imported and run
    logging.getLogger("httpx").info("HTTP Request: POST http://127.0.0.1/api/logs/ 201")
    logging.getLogger("httpx").warning("httpx warning kept")
    logging.getLogger("soraflow.stage").info("stage info kept")
    """
)


def test_cli_logging_keeps_warnings_and_drops_library_info_lines(tmp_path):
    res = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr
    lines = [line for line in res.stderr.splitlines() if line[:2].isdigit()]  # "HH:MM:SS LEVEL name: ..."
    assert any("ERROR soraflow.curation.validation: clips.parquet validation: FAILED" in line for line in lines), lines
    assert any("WARNING httpx: httpx warning kept" in line for line in lines), lines
    assert any("INFO soraflow.stage: stage info kept" in line for line in lines), lines
    assert not [line for line in lines if "great_expectations" in line], lines
    assert not [line for line in lines if "HTTP Request" in line], lines
    assert (tmp_path / "validation-out" / "validation").is_dir()
