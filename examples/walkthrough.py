"""A multi-night reduction through the Python API, step by step, on simulated data.

Run it with ``python examples/walkthrough.py [FOLDER]``.  Each step builds a lazy graph;
only the writers (``to_fits``) and the pipeline compute.
"""

import sys
from pathlib import Path

import daskred as dr

folder = Path(sys.argv[1] if len(sys.argv) > 1 else "walkthrough")
sim = dr.simulate(folder / "sim", scale="small", overwrite=True)        # two nights, V and R

# 1. collect: headers only
table = dr.scan(sim.raw_dir)
print(dr.collection.summarize(table).to_string(index=False))

# 2. masters, per night (bias, dark per exposure time, flat per filter), lazy until written
masters = dr.make_masters(table)
written = dr.write_masters(masters, folder / "masters", overwrite=True)
print("masters:", *written.values(), sep="\n  ")

# 3. calibrate the V science frames of the first night
night = sim.nights[0]
lights = table[(table.imagetyp == "light") & (table["filter"] == "V") & (table.night == night)]
row = lights.iloc[0]
calibrated = dr.calibrate(
    dr.open_frames(lights),
    bias=dr.select_master(masters, row, kind="bias"),
    dark=dr.select_master(masters, row, kind="dark"),
    flat=dr.select_master(masters, row, kind="flat"),
)

# 4. cosmic rays (astroscrappy per block with a derived halo) and background
clean = dr.detect_cosmics(calibrated)
data = dr.subtract_background(clean["data"], mask=calibrated["mask"] | clean["mask"], exclude_percentile=50.0)

# 5. register on the first frame and stack
transforms = dr.find_transforms(data, method="asterism", on_failure="skip")   # computes star lists
print(transforms[["path", "status", "dx", "dy", "rotation", "n_matches", "rms_px"]].to_string(index=False))
aligned = dr.apply_transforms(data, transforms, output_grid="union")
stack = dr.combine(aligned["data"], method="mean", clip="sigma", sigma=3.0)
dr.to_fits(stack, folder / f"stack_V_{night}.fits", overwrite=True)

# 6. or all of it, both nights and filters, with photometric calibration, in one call
config = dr.PipelineConfig().replace(photometry={"standards": str(sim.standards_path)})
report = dr.reduce(sim.raw_dir, out=folder / "reduced", config=config)
print(report.text)
