"""Values of the experiment, of -e overrides and of the inventory reach Ansible as data, never as templates.

Every string-valued key of the experiment schema is given a payload that
runs a command on the controller if Ansible ever evaluates it; the run's
variables go through the writer tracekit-run uses (phases.write_extravars)
into a real ansible-playbook that reads every one of them; nothing may run,
and the text must arrive as it was written.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import ansible_runner
import pytest
import yaml

from tracekit.errors import TracekitError
from tracekit.experiment.phases import write_extravars
from tracekit.experiment.render import extravars, read_inventory
from tracekit.experiment.spec import load_experiment
from tracekit.workloads import experiment_schema

REPO = Path(__file__).resolve().parents[2]
BASES = {"ffmpeg": REPO / "experiments" / "smoke.yaml", "http": REPO / "experiments" / "http.yaml"}


def payload(marker: Path) -> str:
    """A Jinja expression and a statement, each of which would create ``marker`` if evaluated."""
    return (f"{{{{ lookup('ansible.builtin.pipe', 'touch {marker}') }}}}"
            f"{{% set x = lookup('ansible.builtin.pipe', 'touch {marker}.stmt') %}}$(touch {marker}.shell)")  # fmt: skip


def header_payloads(marker: Path) -> list[str]:
    """Templates without a '{': a '#jinja2:' header sets delimiters of its own, or line statements."""
    return [
        f"#jinja2:variable_start_string:'<<',variable_end_string:'>>'\n<< lookup('ansible.builtin.pipe', 'touch {marker}.hdr') >>",
        f"#jinja2:line_statement_prefix:'%'\n% set x = lookup('ansible.builtin.pipe', 'touch {marker}.line')\nffmpeg",
    ]


def string_keys(schema: dict, root: dict, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Dotted paths of every property that may hold free text (a string without an enum)."""
    if "$ref" in schema:
        schema = root["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
    found = []
    kinds = schema.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if "string" in kinds and "enum" not in schema and path:
        found.append(path)
    if "array" in kinds and isinstance(schema.get("items"), dict):
        items = schema["items"]
        item_kinds = items.get("type") if isinstance(items.get("type"), list) else [items.get("type")]
        if "string" in item_kinds and "enum" not in items:
            found.append((*path, "[]"))
    for name, sub in (schema.get("properties") or {}).items():
        found += string_keys(sub, root, (*path, name))
    return found


def experiment_with(path: tuple[str, ...], value: str, folder: Path) -> Path:
    """A copy of the base experiment of the key's workload with ``value`` at ``path`` ('[]': as a list's item)."""
    kind = "http" if path[:2] == ("workload", "http") else "ffmpeg"
    document = yaml.safe_load(BASES[kind].read_text())
    if path[-1] == "[]":
        path, value = path[:-1], [value]
    if path == ("workload", "ffmpeg", "inputs"):  # an absolute folder holding a file, named by the payload
        document["workload"]["ffmpeg"].pop("generate", None)
        value = str(folder / "inputs" / value.lstrip("/"))
        Path(value).mkdir(parents=True, exist_ok=True)
        (Path(value) / "clip.mp4").write_bytes(b"")
    target = document
    for key in path[:-1]:
        target = target.setdefault(key, {})
        if key == "container" and not target:  # the rest of a valid container beside the key
            target.update({"engine": "podman"} if path[-1] in ("image", "rootfs") else {"engine": "podman", "rootfs": "/"})
    target[path[-1]] = value
    out = folder / f"{'.'.join(path)}.yaml"
    out.write_text(yaml.safe_dump(document))
    return out


def test_no_value_of_the_experiment_is_ever_evaluated_by_ansible(tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    inventory = read_inventory(REPO / "inventory" / "local.yml")
    schema = experiment_schema()  # every kind's part: each string of each kind
    variables: dict[str, dict] = {}
    refused: dict[str, str] = {}
    for path in string_keys(schema, schema):
        name = ".".join(path)
        for kind, texts in (("", [payload(markers / name), "/" + payload(markers / name)]),  # as is, as a path
                            *((f"#{i}", [text]) for i, text in enumerate(header_payloads(markers / name)))):
            for text in texts:
                try:
                    experiment = load_experiment(experiment_with(path, text, tmp_path), None)
                    variables[name + kind] = extravars(experiment, "r1", tmp_path / "run", tmp_path / "wheels",
                                                       tmp_path / "secret", sys.executable, inventory, REPO)  # fmt: skip
                    break
                except TracekitError as exc:  # a pattern, a path that must exist: validation is the guard there
                    refused[name + kind] = str(exc)
    # Free-text keys of both workloads carry the payload as far as Ansible.
    for name in ("collectors.match", "collectors.match_cmdline", "workload.ffmpeg.inputs", "description",
                 "workload.http.load.endpoint", "collectors.match#0", "collectors.match#1", "description#0",
                 "workload.ffmpeg.container.options.[]", "workload.http.container.options.[]",
                 "workload.http.container.rootfs"):
        assert name in variables, refused.get(name)
    # One ansible-playbook reads every tracekit_run_* variable of every experiment, all the way down.
    data = tmp_path / "runner"
    everything = {f"{name}/{var}": value for name, values in variables.items() for var, value in values.items()}
    write_extravars(data, {"payloads": everything})
    (data / "project").mkdir(parents=True)
    out = tmp_path / "as-ansible-read-them.json"
    playbook = [{"hosts": "localhost", "gather_facts": False, "tasks": [
        {"ansible.builtin.copy": {"dest": str(out), "content": "{{ payloads | to_json }}"}},
        # Every value used the way the roles use them: argv elements, in a list made by an expression,
        # interpolated into longer strings (one module run for them all).
        {"ansible.builtin.command": {"argv": "{{ ['true'] + (payloads | dict2items | map(attribute='value') | map('string') | list) }}"}},
        {"ansible.builtin.command": {"argv": ["true", "x{{ payloads }}", "{{ payloads | to_json }}"]}},
        # ... and prefixed by a filter, as the service role passes a container's options.
        {"ansible.builtin.command": {"argv": "{{ ['true'] + (payloads | dict2items | map(attribute='value') | map('string') "
                                             "| map('regex_replace', '^', '--container-option=') | list) }}"}},
    ]}]  # fmt: skip
    (data / "project" / "play.yml").write_text(yaml.safe_dump(playbook))
    result = ansible_runner.run(
        private_data_dir=str(data), playbook="play.yml", quiet=True,
        envvars={"PATH": f"{Path(sys.executable).parent}:/usr/sbin:/usr/bin:/sbin:/bin"},
        inventory="localhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n",
    )  # fmt: skip
    assert result.rc == 0, result.stdout.read()
    assert sorted(p.name for p in markers.iterdir()) == []  # nothing ran
    assert json.loads(out.read_text()) == json.loads(json.dumps(everything))  # every text arrived as written


def test_a_template_in_an_inventory_value_is_refused_unless_marked_unsafe(tmp_path):
    marker = tmp_path / "marker"
    root = json.dumps("/b/" + payload(marker))  # a JSON string is a YAML string

    def inventory(tag: str) -> Path:
        path = tmp_path / "inventory.yml"
        path.write_text(
            "all:\n  children:\n    controller: {hosts: {c0: {tracekit_node_root: /a}}}\n"
            f"    workers: {{hosts: {{w1: {{tracekit_node_root: {tag}{root}}}}}}}\n"
        )
        return path

    with pytest.raises(TracekitError, match=r"host w1: tracekit_node_root holds a template .*!unsafe"):
        read_inventory(inventory(""))
    root = json.dumps(header_payloads(marker)[0])  # a header counts only at the start
    with pytest.raises(TracekitError, match=r"host w1: tracekit_node_root holds a template .*#jinja2"):
        read_inventory(inventory(""))
    root = json.dumps("/b/" + payload(marker))
    # Tagged !unsafe in the inventory, the same text is data: accepted as it is.
    path = inventory("!unsafe ")
    assert read_inventory(path).hostvars["w1"]["tracekit_node_root"].startswith("/b/{{")
    assert not marker.exists()


@pytest.mark.parametrize("where", ["group_vars/all.yml", "group_vars/workers.yml", "host_vars/w1.yml"])
def test_a_template_in_group_vars_or_host_vars_beside_the_inventory_is_refused(tmp_path, where):
    """ansible-playbook reads these folders beside the inventory too (its vars plugins)."""
    marker = tmp_path / "marker"
    path = tmp_path / "inventory.yml"
    path.write_text("all:\n  children:\n    controller: {hosts: {c0: {tracekit_node_root: /a}}}\n"
                    "    workers: {hosts: {w1: {tracekit_node_root: /b}}}\n")  # fmt: skip
    (tmp_path / where).parent.mkdir()
    (tmp_path / where).write_text(f"tracekit_inputs_root: {json.dumps(payload(marker))}\n")
    with pytest.raises(TracekitError, match=r"host (c0|w1): tracekit_inputs_root holds a template"):
        read_inventory(path)
    assert not marker.exists()
