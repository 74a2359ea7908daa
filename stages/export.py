"""Export the trained model to ONNX and prove it matches PyTorch before writing it.

    python stages/export.py --data data/prepared --model models/model.pt --out models/model.onnx \\
        --parity results/export/parity.json

The graph takes RGB uint8 N×S×S×3 and normalizes inside; class names and input size are in its
metadata (tinyclf.serve.export). Fails, writing nothing, if onnxruntime and PyTorch disagree on
the prepared val images (max |logit difference| > 1e-3 or top-1 agreement < 99.8%).
"""

from __future__ import annotations

import sys
from pathlib import Path

from tinyclf.stage import run_stage, stage_parser


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("Export models/model.pt to ONNX (uint8 NHWC input) with a parity check.",
                          progress_bars=False)
    parser.add_argument("--data", type=Path, required=True, help="prepared data directory (data/prepared)")
    parser.add_argument("--model", type=Path, required=True, help="model file (models/model.pt)")
    parser.add_argument("--out", type=Path, required=True, help="ONNX file to write (models/model.onnx)")
    parser.add_argument("--parity", type=Path, required=True, help="parity figures (results/export/parity.json)")
    args = parser.parse_args(argv)

    def export(params) -> None:
        from tinyclf.serve.export import export_model

        r = export_model(args.model, args.data, args.out, args.parity)
        print(f"export: {args.out} ({r['onnx_bytes'] / 1e6:.1f} MB, opset {r['opset']}, {r['exporter']} exporter, "
              f"{r['export_seconds']:.1f} s); parity on {r['images']} val images: max |logit diff| "
              f"{r['max_abs_logit_diff']:.2g}, top-1 agreement {r['top1_agreement']:.2%}")

    return run_stage("export", args, export)


if __name__ == "__main__":
    sys.exit(main())
