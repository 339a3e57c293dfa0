"""What the tests and the benchmarks share. One module per concern; import from the module, e.g.
`from tests.support.images import bps_like_tiff`.

    paths          REPO, the real BPS samples in shared/ (REAL_IMAGE, REAL_META) and the skip reason without them
    env            use_offline_environment: HF offline, Agg, quiet tokenizers (conftest.py and bench/common.py)
    images         BPS-like crops: bps_like_image (real-image tiles), tiff_bytes, png_bytes, bps_like_tiff (drawn
                   foci, to a file), nucleus_crop_with_mask (drawn crop + ground-truth mask)
    folders        bps_name, SMALL_DESIGN, design_rows, write_meta (meta.csv), make_raw_folder (as `aws s3 sync`
                   leaves it), sha256, make_prepared_folder (data/bps-shaped, with masks)
    uploads        the app's upload cases: bad_files, odd_but_readable
    tiny_models    TINY_CONFIG / MINI_CONFIG paths, LABELS, save_tiny_model (random init), train_tiny_model (a few
                   dozen mini-batch steps), fit_tiny_model (a few full-batch steps), tiny_configs / write_config (one
                   tiny config per supported architecture), ARCHITECTURE_IDS, EXPECTED_CLASS, BACKBONE_SIZE
    loopback_s3    LoopbackS3: the S3-like server on 127.0.0.1 (latency, scripted faults, request log); the fetch
                   tests and bench/fetch_throughput.py
    launch         free_port, accelerate_launch: 2-process launches on a port the OS says is free
    audit_worlds   synthetic worlds laid out like the real experiment and the tiny audit's flags
    app_browser    the app in headless Chromium (Playwright); `python -m tests.support.app_browser` makes the
                   README's screenshot
    teardown_driver  a script, not a module to import: `accelerate launch ... tests/support/teardown_driver.py MODE`
"""
