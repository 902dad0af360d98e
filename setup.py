from setuptools import find_packages, setup

setup(
    name="prio-processor",
    version="4.0.0",
    description="Batch processing for Prio servers, wire-compatible with libprio 1.x",
    license="MPL-2.0",
    packages=find_packages(include=["prio_processor", "prio_processor.*"]),
    python_requires=">=3.11",
    install_requires=[
        "click>=8.1",
        "cryptography>=42",
        "google-cloud-storage>=2.14",
        "msgpack>=1.0",
        "numpy>=1.26",
        "pyarrow>=15",
    ],
    entry_points={"console_scripts": ["prio=prio_processor.cli:entry_point"]},
)
