"""An MSP's GPU paths, CPU against CUDA in one run: sentence embeddings and DP-SGD.

An MSP with a GPU should get its speed where meshfl spends its time: encoding texts with the
frozen MiniLM encoder (every text agent), and DP-SGD on the trainable heads. This script
times both on the CPU and, when torch sees one, on the GPU, checks that the GPU gives the
same embeddings, prints a table and writes ``gpu_paths.json`` and ``gpu_paths.csv``.

    python benchmarks/gpu_paths.py [--out DIR] [--texts 4000] [--records 20000]

``--bare`` is for a machine that has torch and transformers but not meshfl's other
dependencies (the lent GPU machine): it imports only the timed modules, skipping the
package ``__init__`` files, and loads the encoder from ``--encoder-dir`` (a copy of the
bundled MiniLM directory; weights may be float16, they are upcast).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def bare_imports() -> None:
    """Register meshfl's packages without running their ``__init__`` (few dependencies)."""
    src = ROOT / "src" / "meshfl"
    for name, sub in (("meshfl", ""), ("meshfl.config", "config"), ("meshfl.privacy", "privacy"),
                      ("meshfl.models", "models")):  # fmt: skip
        module = types.ModuleType(name)
        module.__path__ = [str(src / sub) if sub else str(src)]
        sys.modules[name] = module


def log_lines(n: int) -> list[str]:
    """``n`` distinct syslog-like lines (what threat_intel encodes)."""
    users = ["root", "admin", "backup", "svc-sql", "jdoe", "oracle", "git"]
    return [
        f"Nov {1 + i % 28} 0{i % 10}:{i % 60:02d}:{(7 * i) % 60:02d} fw{i % 9:02d} "
        f"sshd[{1000 + i}]: Failed password for {users[i % len(users)]} from "
        f"185.{i % 251}.{(3 * i) % 255}.{i % 7} port {20000 + i} ssh2"
        for i in range(n)
    ]


def time_encoder(encoder_dir: Path | None, texts: list[str], device: str) -> tuple[float, Any]:
    import torch

    from meshfl.models.text_encoder import TextEncoder, load_text_encoder

    if encoder_dir is None:
        encoder = load_text_encoder("minilm")
        encoder = TextEncoder(encoder.model, encoder.tokenizer, name="minilm", device=device)
    else:
        from transformers import AutoModel, AutoTokenizer

        model = AutoModel.from_pretrained(encoder_dir, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(encoder_dir)
        encoder = TextEncoder(model, tokenizer, name="minilm", device=device)
    encoder.batch_size = 256 if device == "cuda" else 32
    encoder.encode(texts[:64])  # warm-up (kernels, allocator), then a cold cache
    encoder._cache.clear()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    embeddings = encoder.encode(texts)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, embeddings


def time_dpsgd(records: int, hidden: int, device: str) -> float:
    import torch

    from meshfl.models.heads import MultiTaskHead, multitask_loss
    from meshfl.privacy.dpsgd import train_private

    rng = np.random.default_rng(0)
    x = rng.normal(size=(records, 384)).astype(np.float32)
    y = np.stack([rng.integers(0, 8, records), rng.integers(0, 4, records)], axis=1)
    head = MultiTaskHead(384, (8, 4), hidden=hidden).to(device)
    args: dict[str, Any] = dict(loss_fn=multitask_loss, batch_size=256, lr=1e-3,
                                noise_multiplier=1.0, max_grad_norm=1.0, seed=0)  # fmt: skip
    train_private(head, x[:512], y[:512], epochs=1, **args)  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = train_private(head, x, y, epochs=1, **args)
    if device == "cuda":
        torch.cuda.synchronize()
    assert result.steps == round(records / 256)
    assert next(head.parameters()).device.type == device
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--texts", type=int, default=4000)
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--bare", action="store_true")
    parser.add_argument("--encoder-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.bare:
        bare_imports()
    import torch

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    gpu = torch.cuda.get_device_name(0) if "cuda" in devices else "none"
    rows: list[dict[str, Any]] = []
    texts = log_lines(args.texts)
    embeddings = {}
    for device in devices:
        seconds, embeddings[device] = time_encoder(args.encoder_dir, texts, device)
        rows.append({"task": f"encode {len(texts)} texts (MiniLM-L6)", "device": device,
                     "seconds": seconds, "per_second": len(texts) / seconds})  # fmt: skip
    for hidden in (128, 1024):
        for device in devices:
            seconds = time_dpsgd(args.records, hidden, device)
            rows.append({"task": f"DP-SGD epoch, {args.records} records, head 384-{hidden}",
                         "device": device, "seconds": seconds,
                         "per_second": args.records / seconds})  # fmt: skip
    summary: dict[str, Any] = {"gpu": gpu, "torch": torch.__version__, "rows": rows}
    if "cuda" in embeddings:
        a, b = embeddings["cpu"], embeddings["cuda"]
        summary["embedding_max_abs_diff"] = float(np.abs(a - b).max())
        summary["embedding_min_cosine"] = float(np.min(np.sum(a * b, axis=1)))
    cpu = {r["task"]: r["seconds"] for r in rows if r["device"] == "cpu"}
    print(f"GPU: {gpu}; torch {torch.__version__}")
    print("| task | device | seconds | per second | speed-up over CPU |\n|---|---|---|---|---|")
    for r in rows:
        r["speedup"] = cpu[r["task"]] / r["seconds"]
        print(f"| {r['task']} | {r['device']} | {r['seconds']:.3f} | {r['per_second']:.0f} | "
              f"{r['speedup']:.1f}x |")  # fmt: skip
    for key in ("embedding_max_abs_diff", "embedding_min_cosine"):
        if key in summary:
            print(f"{key}: {summary[key]:.3g}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_paths.json").write_text(json.dumps(summary, indent=2))
    with open(args.out / "gpu_paths.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if "embedding_min_cosine" in summary and summary["embedding_min_cosine"] < 0.9999:
        print("GPU embeddings differ from the CPU's", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
