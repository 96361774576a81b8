"""The op files, one per op and named after it: each holds its `@triton.jit` kernel(s), the launcher
`<op>_triton` and the PyTorch twin `<op>_torch` of the same signature.

Private modules beside them: `_tiles` (the `@triton.jit` tile helpers and the mirroring of symmetric
results that several op files share) and `_triton_utils` (host-side helpers of the launchers:
interpreter detection, autotune configs, NaN-filled outputs, index checks). No op file imports from
another op file.
"""
