from pathlib import Path

from tests.cli.support import add_patient, run
from tests.cli.test_resumable_cli import env, live, wire  # noqa: F401
from tests.cli.tus_wire import WireLog
from tests.support.factories import pdf_bytes


def test_big(env: dict[str, str], wire: WireLog, tmp_path: Path) -> None:
    patient = add_patient(env)
    source = tmp_path / "big.pdf"
    source.write_bytes(pdf_bytes(20 * 1024 * 1024 + 3))
    result = run("upload", str(source), "--patient", patient, "--type", "11502-2", env=env)
    print("WIRE", wire.methods(), [(p.offset, p.received, p.status) for p in wire.patches()])
    assert result.exit_code == 0
