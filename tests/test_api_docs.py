"""The API reference builds from the docstrings with warnings as errors (``mkdocs build --strict``): a docstring
griffe cannot parse (a parameter documented that the signature lacks, a malformed section), a page naming an
object that does not exist, or a broken link between the pages fails here."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_mkdocs_yml_is_valid_yaml_without_duplicate_keys():
    yaml = pytest.importorskip("yaml")  # PyYAML comes with mkdocs

    class Unique(yaml.SafeLoader):
        pass

    def mapping(loader, node, deep=False):
        keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
        dup = {k for k in keys if keys.count(k) > 1}
        assert not dup, f"mkdocs.yml: duplicate keys {sorted(dup)} (line {node.start_mark.line + 1})"
        return loader.construct_mapping(node, deep)

    Unique.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=Unique)
    pages = [next(iter(item.values())) for item in config["nav"]]
    docs = ROOT / config["docs_dir"]
    assert sorted(pages) == sorted(p.name for p in docs.glob("*.md")), "every page in the nav, every nav entry a page"


def test_api_reference_builds_strict(tmp_path):
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                        str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    page = (tmp_path / "site" / "nn" / "index.html").read_text()
    for name in ("GroupNorm", "make_norm", "FrozenBatchNorm", "WSConv2d"):
        assert name in page, name
    assert "convert_bn_to_gn" in (tmp_path / "site" / "groupnorm" / "index.html").read_text()
    # the formulas are marked for KaTeX, and the pages load every script and stylesheet from the site itself
    assert 'class="arithmatex">\\[' in (tmp_path / "site" / "reference" / "index.html").read_text()
    for html in (tmp_path / "site").rglob("*.html"):
        text = html.read_text()
        loads = re.findall(r"<script[^>]*\ssrc=\"([^\"]+)\"", text) + re.findall(r"<link[^>]*\shref=\"([^\"]+)\"", text)
        external = [u for u in loads if re.match(r"(https?:)?//", u)]
        assert not external, f"{html.relative_to(tmp_path)} loads {external}"
        if html.name == "index.html" and "arithmatex" in text:
            assert "assets/katex/katex.min.js" in text and "assets/katex/katex.min.css" in text
    for asset in ("assets/katex/katex.min.js", "assets/katex/contrib/auto-render.min.js", "assets/katex/LICENSE",
                  "assets/katex/fonts/KaTeX_Main-Regular.woff2", "assets/katex-init.js"):
        assert (tmp_path / "site" / asset).is_file(), asset
