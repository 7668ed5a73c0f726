"""C++/CUDA rasterizer sources, shipped as package data and JIT-built by studio.ext."""
