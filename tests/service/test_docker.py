"""The Docker files, checked with what runs here: the service image's own ENV, CMD and
HEALTHCHECK run outside Docker against the bundled demo collection (docker/smoke.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO


def test_service_image_command_serves_the_demo_collection():
    done = subprocess.run([sys.executable, str(REPO / "docker" / "smoke.py")],
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert done.stdout.count("smoke: ok") == 4


def test_compose_and_images_fit_together():
    compose = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    for service in compose["services"].values():
        build = service.get("build")
        if build:
            assert (REPO / "docker" / build["context"] / build["dockerfile"]).is_file()
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source in compose["volumes"] or (REPO / "docker" / source).exists(), volume
    assert compose["services"]["search"]["volumes"] == ["indexes:/indexes"]
    pin = re.search(r'"torch==([\d.]+)"', (REPO / "pyproject.toml").read_text()).group(1)
    for dockerfile in ("service.Dockerfile", "train.Dockerfile"):
        text = (REPO / "docker" / dockerfile).read_text()
        assert f'"torch=={pin}"' in text, dockerfile  # same torch as the project pins
        for source in re.findall(r"^COPY (\S+)", text, flags=re.M):
            assert (REPO / source).exists(), source  # every COPY source is in the repository
    settings = yaml.safe_load((REPO / "docker" / "service.yaml").read_text())
    from cormorant.service.settings import ServiceSettings

    ServiceSettings.model_validate(settings)  # the baked-in config is valid
    assert Path(settings["indexes"]["demo"]["path"]).is_absolute()
