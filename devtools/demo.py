"""``make demo``: a local S3 server, the input WARCs uploaded to it, and the real job on local Ray.

Input: every WARC under ``../shared/data/warc`` when that folder exists (with its seeds, code
dataset and benchmarks); otherwise ``configs/demo.yaml`` as it stands, on what the installed
packages ship (``raypipe.defaults``): the first WARC file of a Common Crawl dump over HTTPS,
stopped after ``--records`` records, harvested seeds, the bfcl-eval wheel's BFCL test data and the
installed packages' Python sources as the code stream. The S3 data
lives under ``.demo/s3`` so the output survives the demo; small result files are also copied to
``.demo/out`` for a quick look.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from devtools.local_s3 import start_local_s3

REPO = Path(__file__).resolve().parents[1]
BUCKET = "raypipe-demo"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default=str(REPO / "configs" / "demo.yaml"))
    parser.add_argument("--shared", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--crawl", default="CC-MAIN-2024-22", help="Common Crawl id when ../shared is absent")
    parser.add_argument("--records", type=int, default=2000, help="records to read from the Common Crawl WARC")
    parser.add_argument("--workdir", default=str(REPO / ".demo"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)

    workdir = Path(args.workdir)
    (workdir / "s3").mkdir(parents=True, exist_ok=True)
    server = start_local_s3(root=workdir / "s3")
    try:
        server.create_bucket(BUCKET)
        shared = Path(args.shared)
        warc_dir = shared / "warc"
        overrides = [f"output=s3://{BUCKET}/runs/demo"]
        if shared.is_dir():
            for folder in ("seeds", "mix/code", "benchmarks"):
                files = sorted(p for p in (shared / folder).rglob("*") if p.is_file())
                for p in files:
                    server.upload_file(p, BUCKET, f"{folder}/{p.relative_to(shared / folder)}")
            server.upload_file(shared / "MANIFEST.jsonl", BUCKET, "meta/MANIFEST.jsonl")
            overrides += [
                f"seeds.sources=[s3://{BUCKET}/seeds/]",
                f"seeds.license_manifest=s3://{BUCKET}/meta/MANIFEST.jsonl",
                f"mix.code.uri=s3://{BUCKET}/mix/code/pypi_python_code.jsonl.gz",
                f"decontam.benchmarks=s3://{BUCKET}/benchmarks/",
            ]
        if warc_dir.is_dir():
            files = sorted(p for p in warc_dir.rglob("*") if p.is_file() and ".warc" in p.name)
            for p in files:
                server.upload_file(p, BUCKET, f"input/{p.relative_to(warc_dir)}")
            print(f"demo: uploaded {len(files)} WARC files from {warc_dir} to s3://{BUCKET}/input/")
            overrides += [f"input=s3://{BUCKET}/input/", "limit_files=null", "limit_records=null"]
        else:
            print(f"demo: {warc_dir} not found; reading the first WARC of {args.crawl} over HTTPS")
            overrides += [f"input={args.crawl}", "limit_files=1", f"limit_records={args.records}"]
        env = {**os.environ, **server.env}
        cmd = [sys.executable, str(REPO / "jobs" / "build_forge.py"), "--config", args.config]
        for item in overrides + args.set:
            cmd += ["--set", item]
        print("demo: running", " ".join(cmd[1:]))
        code = subprocess.call(cmd, env=env, cwd=REPO)
        if code == 0:
            out = workdir / "out"
            out.mkdir(exist_ok=True)
            client = server.client()
            for key in ("stats.json", "manifest.json", "report.html", "README.md"):
                try:
                    client.download_file(BUCKET, f"runs/demo/{key}", str(out / key))
                except Exception:  # noqa: BLE001 - not every phase writes every file
                    continue
            print(f"\ndemo: output is in s3://{BUCKET}/runs/demo on the local S3 server (data in {workdir / 's3'})")
            print(f"demo: copies of the small result files are in {out}")
        return code
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
