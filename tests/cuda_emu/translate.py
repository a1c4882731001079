"""Rewrite a CUDA source (csrc/cuda/*.cu) into C++ for the CPU emulation build.

Only two constructs are not valid C++ once the emulation headers define the CUDA
keywords (include/ptqx_cuda_emu.h):
- kernel launches ``kernel<<<grid, block[, shared[, stream]]>>>(args)`` become
  ``::ptqx_emu::launch(::ptqx_emu::Config(grid, block, ...), [&] { kernel(args); })``;
- ``extern __shared__ T name[];`` becomes a pointer to the launch's dynamic shared buffer.
Newlines are kept, and a #line directive names the original file, so compiler messages
point at the real .cu line.

Usage: python translate.py IN.cu OUT.cpp
"""

import re
import sys


def _matching(src: str, open_at: int, open_ch: str, close_ch: str) -> int:
    depth = 0
    for i in range(open_at, len(src)):
        if src[i] == open_ch:
            depth += 1
        elif src[i] == close_ch:
            depth -= 1
            if depth == 0:
                return i
    raise ValueError(f"unbalanced {open_ch!r} at offset {open_at}")


def _kernel_start(src: str, end: int) -> int:
    """Start of the kernel expression that ends just before ``<<<`` at ``end``."""
    i = end
    if src[i - 1] == ">":  # template arguments: walk back to the matching '<'
        depth = 0
        i -= 1
        while True:
            if src[i] == ">":
                depth += 1
            elif src[i] == "<":
                depth -= 1
                if depth == 0:
                    break
            i -= 1
    while i > 0 and (src[i - 1].isalnum() or src[i - 1] in "_:"):
        i -= 1
    return i


def translate(src: str) -> str:
    src = re.sub(
        r"extern\s+__shared__\s+([\w:]+)\s+(\w+)\s*\[\s*\]\s*;",
        r"\1* \2 = ::ptqx_emu::dynamic_shared<\1>();",
        src,
    )
    out, pos = [], 0
    while (start := src.find("<<<", pos)) >= 0:
        kstart = _kernel_start(src, start)
        cfg_end = src.index(">>>", start)
        lparen = src.index("(", cfg_end)
        if src[cfg_end + 3 : lparen].strip():
            raise ValueError(f"unexpected text between >>> and ( at offset {cfg_end}")
        rparen = _matching(src, lparen, "(", ")")
        kernel, cfg, args = src[kstart:start], src[start + 3 : cfg_end], src[lparen + 1 : rparen]
        out.append(src[pos:kstart])
        out.append(f"::ptqx_emu::launch(::ptqx_emu::Config({cfg}), [&] {{ {kernel}({args}); }})")
        pos = rparen + 1
    out.append(src[pos:])
    return "".join(out)


def main() -> None:
    src_path, out_path = sys.argv[1], sys.argv[2]
    with open(src_path, encoding="utf-8") as f:
        text = translate(f.read())
    with open(out_path, "w", encoding="utf-8") as f:
        f.write(f'#line 1 "{src_path}"\n{text}')


if __name__ == "__main__":
    main()
