"""Hostile local inputs: FIFOs and devices, unbounded reads, link loops, long or odd prompts, deep or
ambiguous YAML, escapes in echoed text, huge grids, an output root inside a source, and the source cache."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from batch_edit import validation
from batch_edit.errors import ManifestError
from batch_edit.manifest import MAX_ITEMS_PER_RUN, Grid, grid_size, load_manifests
from batch_edit.parameters import axis_names
from batch_edit.source_decoding import SourceError
from batch_edit.sources import FetchOptions, SourceRef, expand_source, load_image, source_ref
from batch_edit.validation import printable
from batch_edit.worker import SourceCache as _SourceCache

from .conftest import batch_edit

MB = 1024 * 1024


def finishes(function, timeout: float = 20):
    """function()'s result, or a test failure if it is still running after `timeout` seconds (a hang)."""
    outcome: dict = {}

    def target():
        try:
            outcome["value"] = function()
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"still running after {timeout} s: it hangs"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@contextlib.contextmanager
def deadline(seconds: int):
    """Fail (TimeoutError) instead of hanging, for code that must run in the main thread."""

    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: it hangs")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def fifo(tmp_path):
    """A FIFO factory; at teardown, any reader still blocked on one is released (only before a fix)."""
    made = []

    def make(path: Path) -> Path:
        os.mkfifo(path)
        made.append(path)
        return path

    yield make
    for path in made:
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:  # no reader left: nothing to release
            pass


def image(path: Path, size=(32, 24), color=(200, 40, 40)) -> Path:
    Image.new("RGB", size, color).save(path)
    return path


def load_error(path: Path, fetch: FetchOptions = FetchOptions()) -> str:
    with pytest.raises(SourceError) as info:
        finishes(lambda: load_image(source_ref(str(path), path.parent), fetch))
    return str(info.value)


def manifest_problems(path: Path, **options) -> str:
    with pytest.raises(ManifestError) as info:
        finishes(lambda: load_manifests([path], **options))
    return str(info.value)


def write_yaml(path: Path, jobs: str) -> Path:
    path.write_text("jobs:\n" + jobs, encoding="utf-8")
    return path


# ---------------------------------------------------------------- 1. only regular files are read


def test_a_fifo_source_is_its_items_failure_not_a_hang(tmp_path, fifo):
    assert load_error(fifo(tmp_path / "pipe.png")) == "not a regular file (fifo)"
    (tmp_path / "link.png").symlink_to(tmp_path / "pipe.png")
    assert load_error(tmp_path / "link.png") == "not a regular file (fifo)"


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null"])
def test_a_source_linked_to_a_device_fails_without_reading_it(tmp_path, device):
    (tmp_path / "dev.png").symlink_to(device)
    assert load_error(tmp_path / "dev.png") == "not a regular file (character device)"


def test_a_socket_source_fails(tmp_path):
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(tmp_path / "s.png"))
        assert load_error(tmp_path / "s.png") == "not a regular file (socket)"
    finally:
        server.close()


def test_a_symlink_to_a_regular_image_still_loads(tmp_path):
    (tmp_path / "link.png").symlink_to(image(tmp_path / "real.png"))
    assert load_image(source_ref(str(tmp_path / "link.png"), tmp_path)).size == (32, 24)


def test_a_fifo_caption_refuses_the_manifest_naming_it(tmp_path, fifo):
    image(tmp_path / "cat.png")
    fifo(tmp_path / "cat.txt")
    problems = manifest_problems(write_yaml(tmp_path / "m.yaml", "  - {name: a, sources: cat.png, prompts: x}\n"))
    assert "cat.txt" in problems and "not a regular file (fifo)" in problems


def test_a_fifo_manifest_or_pipeline_config_is_refused_with_exit_2(tmp_path, fifo):
    result = finishes(lambda: batch_edit("plan", str(fifo(tmp_path / "m.yaml"))))
    assert result.returncode == 2
    assert f"{tmp_path / 'm.yaml'}: not a regular file (fifo)" in result.stderr
    image(tmp_path / "cat.png")
    manifest = write_yaml(tmp_path / "ok.yaml", "  - {name: a, sources: cat.png, prompts: x}\n")
    config = fifo(tmp_path / "pipe.yaml")
    result = finishes(lambda: batch_edit("plan", str(manifest), "--pipeline", str(config)))
    assert result.returncode == 2
    assert f"{config}: not a regular file (fifo)" in result.stderr


def test_a_run_with_a_fifo_source_records_it_and_finishes(tmp_path, fifo, tiny_config):
    image(tmp_path / "good.png")
    fifo(tmp_path / "pipe.png")
    manifest = write_yaml(
        tmp_path / "m.yaml",
        "  - {name: a, sources: [good.png, pipe.png], prompts: x, num_inference_steps: 2, width: 32, height: 32}\n",
    )
    out = tmp_path / "out"
    with deadline(120):  # a run sets signal handlers, so it stays in the main thread
        result = batch_edit("run", str(manifest), "--pipeline", str(tiny_config), "--output-root", str(out))
    assert result.returncode == 1, result.stderr
    failures = pd.read_csv(out / "a" / "failures.csv")
    assert list(failures["error"]) == ["not a regular file (fifo)"]


# ---------------------------------------------------------------- 2. reads are capped while reading


def test_a_local_source_over_max_download_mb_fails_like_a_download(tmp_path):
    (tmp_path / "big.png").write_bytes(b"\0" * (MB + 1))
    assert load_error(tmp_path / "big.png", FetchOptions(max_bytes=MB)) == "larger than 1 MB"


def test_the_source_cap_is_counted_while_reading_not_from_stat(tmp_path):
    (tmp_path / "proc.png").symlink_to("/proc/self/status")  # stat says 0 bytes; reading gives about 1 KB
    assert load_error(tmp_path / "proc.png", FetchOptions(max_bytes=100)) == "larger than 100 bytes"


def test_a_caption_over_its_cap_refuses_the_manifest(tmp_path):
    image(tmp_path / "cat.png")
    (tmp_path / "cat.txt").write_text("a" * (MB + 1))
    problems = manifest_problems(write_yaml(tmp_path / "m.yaml", "  - {name: a, sources: cat.png, prompts: x}\n"))
    assert "cat.txt" in problems and "larger than 1 MB" in problems


def test_a_manifest_cap_is_counted_while_reading(tmp_path, monkeypatch):
    monkeypatch.setattr(validation, "MAX_FILE_BYTES", 100)
    (tmp_path / "m.yaml").symlink_to("/proc/self/status")
    assert manifest_problems(tmp_path / "m.yaml") == f"{tmp_path / 'm.yaml'}: larger than the 100-byte limit"


def test_a_manifest_linked_to_dev_zero_is_refused(tmp_path):
    (tmp_path / "m.yaml").symlink_to("/dev/zero")
    result = finishes(lambda: batch_edit("plan", str(tmp_path / "m.yaml")))
    assert result.returncode == 2
    assert "not a regular file (character device)" in result.stderr


# ---------------------------------------------------------------- 3. no folder is entered twice


@pytest.fixture
def looped(tmp_path) -> Path:
    """photos/a.png, photos/sub/b.png, and photos/sub/loop -> photos."""
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    image(root / "a.png")
    image(root / "sub" / "b.png")
    (root / "sub" / "loop").symlink_to(root)
    return root


def test_a_recursive_glob_through_a_link_loop_counts_each_image_once(looped):
    refs = finishes(lambda: expand_source("photos/**/*.png", looped.parent, recursive=True))
    assert [Path(ref.key).relative_to(looped).as_posix() for ref in refs] == ["a.png", "sub/b.png"]


def test_a_recursive_folder_through_a_link_loop_counts_each_image_once(looped):
    refs = finishes(lambda: expand_source("photos", looped.parent, recursive=True))
    assert [Path(ref.key).relative_to(looped).as_posix() for ref in refs] == ["a.png", "sub/b.png"]


def test_a_linked_folder_is_followed_once(tmp_path):
    root, elsewhere = tmp_path / "photos", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    image(elsewhere / "c.png")
    (root / "link").symlink_to(elsewhere)
    (root / "link2").symlink_to(elsewhere)  # the same folder twice: its images count once, under the first name
    refs = expand_source("photos", tmp_path, recursive=True)
    assert [Path(ref.key).relative_to(root).as_posix() for ref in refs] == ["link/c.png"]


def test_recursive_glob_keeps_the_hidden_rules(tmp_path):
    image((tmp_path / "p" / ".hidden").mkdir(parents=True) or tmp_path / "p" / ".hidden" / "x.png")
    image(tmp_path / "p" / "y.png")
    image(tmp_path / "p" / ".z.png")

    def names(spec):
        return [Path(ref.key).relative_to(tmp_path / "p").as_posix() for ref in expand_source(spec, tmp_path, True)]

    assert names("p/**/*.png") == ["y.png"]
    assert names("p/.hidden/**/*.png") == [".hidden/x.png"]
    assert names("p/**/.*.png") == [".z.png"]


# ---------------------------------------------------------------- 4-5. the final prompt is checked


def test_a_long_caption_is_refused_at_manifest_time(tmp_path):
    image(tmp_path / "cat.png")
    (tmp_path / "cat.txt").write_text("c" * 5000)
    problems = manifest_problems(
        write_yaml(tmp_path / "m.yaml", "  - {name: long, sources: cat.png, prompts: '{caption}, oil'}\n")
    )
    assert "jobs[0] ('long')" in problems and "cat.png" in problems
    assert "is 5,005 characters long; the limit is 4,000" in problems


def test_a_long_csv_caption_is_refused_naming_the_row(tmp_path):
    image(tmp_path / "cat.png")
    csv_file = tmp_path / "m.csv"
    csv_file.write_text(f"source,prompt,caption\ncat.png,{{caption}},{'c' * 4001}\n")
    problems = manifest_problems(csv_file)
    assert "row 1" in problems and "is 4,001 characters long" in problems


@pytest.mark.parametrize(
    ("prompt", "shown", "at"), [(r'"a \e[31m red"', r"\x1b", 3), (r'"a\0b"', r"\x00", 2), (r'"a\rb"', r"\r", 2)]
)
def test_control_characters_in_a_prompt_are_refused_with_their_position(tmp_path, prompt, shown, at):
    image(tmp_path / "cat.png")
    problems = manifest_problems(
        write_yaml(tmp_path / "m.yaml", f"  - {{name: a, sources: cat.png, prompts: {prompt}}}\n")
    )
    assert f"contains the control character {shown} at character {at}" in problems
    assert "\x1b" not in problems and "\0" not in problems


def test_control_characters_from_a_caption_are_refused_and_tab_newline_allowed(tmp_path):
    image(tmp_path / "cat.png")
    (tmp_path / "cat.txt").write_text("a\tb\nc\x07d")
    problems = manifest_problems(
        write_yaml(tmp_path / "m.yaml", "  - {name: a, sources: cat.png, prompts: '{caption}'}\n")
    )
    assert r"contains the control character \x07 at character 6" in problems
    (tmp_path / "cat.txt").write_text("a\tb\nc")
    assert load_manifests([tmp_path / "m.yaml"])[0].jobs[0].grids[0].sources[0].caption == "a\tb\nc"


# ---------------------------------------------------------------- 6-7. YAML shape


@pytest.mark.parametrize(
    "text",
    [
        "[" * 10_000 + "]" * 10_000,
        "jobs:\n" + "".join("  " * depth + f"- k{depth}:\n" for depth in range(1, 3000)),
        # deep through aliases, in few nodes: 1,000 levels in a job's field
        "x0: &a0 [1]\n"
        + "".join(f"x{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 1000))
        + "jobs:\n  - {name: a, sources: *a999, prompts: x}\n",
    ],
)
def test_deeply_nested_yaml_is_refused_in_one_line(tmp_path, text):
    (tmp_path / "deep.yaml").write_text(text)
    result = batch_edit("plan", str(tmp_path / "deep.yaml"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and str(tmp_path / "deep.yaml") in result.stderr
    assert "nest" in result.stderr and "Traceback" not in result.stderr
    image(tmp_path / "cat.png")
    manifest = write_yaml(tmp_path / "m.yaml", "  - {name: a, sources: cat.png, prompts: x}\n")
    result = batch_edit("plan", str(manifest), "--pipeline", str(tmp_path / "deep.yaml"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "nest" in result.stderr


def test_a_duplicate_key_is_refused_naming_it_and_its_line(tmp_path):
    image(tmp_path / "cat.png")
    manifest = write_yaml(
        tmp_path / "m.yaml", "  - name: a\n    sources: cat.png\n    prompts: x\n    strength: 0.5\n    strength: 0.7\n"
    )
    assert manifest_problems(manifest) == (f"{manifest}:6: not valid YAML: duplicate key 'strength' (first on line 5)")


def test_merge_keys_still_override_and_tags_stay_refused(tmp_path):
    image(tmp_path / "cat.png")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "base: &base {sources: cat.png, prompts: x, strength: 0.5}\n"
        "jobs:\n  - <<: *base\n    name: a\n    strength: 0.7\n"
    )
    with pytest.raises(ManifestError, match="unknown key 'base'"):  # merged fine; only the extra key is refused
        load_manifests([manifest])
    manifest.write_text("jobs: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ManifestError, match="could not determine a constructor"):
        load_manifests([manifest])


# ---------------------------------------------------------------- 8. echoes are escaped and shortened


def test_printable_escapes_controls_and_shortens():
    assert printable("a\x1b[2Jb\x9b\u202ec\td") == r"a\x1b[2Jb\x9b\u202ec\td"
    assert printable("x" * 100) == "x" * 80 + "… (100 characters)"
    assert printable("plain text, é") == "plain text, é"


def test_escape_sequences_in_a_name_are_escaped_in_errors(tmp_path):
    image(tmp_path / "cat.png")
    manifest = write_yaml(tmp_path / "m.yaml", '  - {name: "a\\e[2Jb", sources: cat.png, prompts: x}\n')
    result = batch_edit("plan", str(manifest))
    assert result.returncode == 2
    assert "\x1b" not in result.stderr and r"a\x1b[2Jb" in result.stderr


def test_a_huge_prompt_is_not_echoed_in_full(tmp_path):
    image(tmp_path / "cat.png")
    manifest = write_yaml(tmp_path / "m.yaml", f"  - {{name: a, sources: cat.png, prompts: {'p' * 100_000}}}\n")
    result = batch_edit("plan", str(manifest))
    assert result.returncode == 2 and "at most 4000 characters" in result.stderr
    assert len(result.stderr) < 1000


def test_plan_escapes_the_values_it_prints(tmp_path):
    image(tmp_path / "a\x1b[31m.png")
    image(tmp_path / "b.png")
    manifest = write_yaml(tmp_path / "m.yaml", "  - {name: a, sources: '*.png', prompts: x}\n")
    result = batch_edit("plan", str(manifest), "--output-root", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout and r"a\x1b[31m" in result.stdout


# ---------------------------------------------------------------- 9. grids are counted before expanding


def test_grid_size_is_the_product_of_its_axes():
    ref = SourceRef("/a.png", False, "a", "", None)
    values = {**{name: (1,) for name in axis_names()}, "strength": (0.5, 0.6, 0.7), "seed": (1, 2)}
    grid = Grid(sources=(ref, ref), prompts=("x",) * 5, **{name: values[name] for name in axis_names()})
    assert grid_size(grid) == 2 * 5 * 3 * 2 * 1


def test_a_huge_grid_is_refused_with_its_count_before_expanding(tmp_path):
    image(tmp_path / "cat.png")
    seeds, steps, guidance = list(range(10_000)), list(range(1, 1001)), [n / 10 for n in range(1000)]
    manifest = write_yaml(
        tmp_path / "m.yaml",
        f"  - {{name: a, sources: cat.png, prompts: x, seed: {seeds}, num_inference_steps: {steps}, "
        f"guidance_scale: {guidance}}}\n",
    )
    problems = manifest_problems(manifest)
    assert "expands to 10,000,000,000 items" in problems and f"{MAX_ITEMS_PER_RUN:,}" in problems


def test_the_limit_is_on_the_whole_run(tmp_path):
    image(tmp_path / "cat.png")
    seeds = list(range(6_000_000 // 1000))
    jobs = "".join(
        f"  - {{name: {name}, sources: cat.png, prompts: x, seed: {seeds}, num_inference_steps: {list(range(1, 1001))}}}\n"
        for name in ("a", "b")
    )
    assert "the manifests expand to 12,000,000 items" in manifest_problems(write_yaml(tmp_path / "m.yaml", jobs))


# ---------------------------------------------------------------- 10. a run never feeds on its own outputs


def test_an_output_root_inside_a_recursive_source_is_not_read(tmp_path, tiny_config):
    photos = tmp_path / "photos"
    photos.mkdir()
    image(photos / "cat.png")
    manifest = write_yaml(
        tmp_path / "m.yaml",
        "  - {name: a, sources: photos, recursive: true, prompts: x, num_inference_steps: 2, width: 32, height: 32}\n"
        "  - {name: b, sources: 'photos/**/*.png', recursive: true, prompts: x, num_inference_steps: 2, width: 32, "
        "height: 32}\n",
    )
    command = ["run", str(manifest), "--pipeline", str(tiny_config), "--output-root", str(photos / "out")]
    for _ in range(2):
        result = batch_edit(*command)
        assert result.returncode == 0, result.stderr
    assert "job a: 1 item(s)" in batch_edit("plan", *command[1:]).stdout
    assert len(pd.read_csv(photos / "out" / "a" / "metadata.csv")) == 1
    assert len(pd.read_csv(photos / "out" / "b" / "metadata.csv")) == 1
    # A job that names a folder inside the output root (edit earlier results) reads its results, not its sheets.
    later = write_yaml(tmp_path / "later.yaml", "  - {name: c, sources: photos/out/a, prompts: x}\n")
    earlier = [p for p in (photos / "out" / "a").iterdir() if p.suffix == ".png" and "contact-sheet" not in p.name]
    assert len(load_manifests([later], output_root=photos / "out")[0].jobs[0].grids[0].sources) == len(earlier) > 0


# ---------------------------------------------------------------- 11. the source cache is bounded by bytes


def test_the_source_cache_is_bounded_by_decoded_bytes(tmp_path):
    refs = [source_ref(str(image(tmp_path / f"{n}.png", size=(64, 64))), tmp_path) for n in range(4)]
    cache = _SourceCache(FetchOptions(), size=16, max_bytes=2 * 64 * 64 * 3)
    for ref in refs:
        cache.get(ref)
        assert cache.bytes == sum(i.width * i.height * 3 for i in cache.images.values()) <= cache.max_bytes
    assert list(cache.images) == refs[2:]
    assert cache.get(refs[3]) is cache.get(refs[3])  # a sweep over one source decodes it once


def test_one_source_larger_than_the_budget_is_still_decoded_once(tmp_path):
    ref = source_ref(str(image(tmp_path / "big.png", size=(64, 64))), tmp_path)
    cache = _SourceCache(FetchOptions(), max_bytes=100)
    assert cache.get(ref) is cache.get(ref)
    assert len(cache.images) == 1
