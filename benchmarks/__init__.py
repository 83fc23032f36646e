"""Speed and quality measurements (scripts, not tests; see README.md). A regular package, so
that ``benchmarks.*`` here wins over the top-level ``benchmarks`` package opacus installs."""
