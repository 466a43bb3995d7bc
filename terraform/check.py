#!/usr/bin/env python3
"""What CI can check of terraform/ without the terraform binary (no provider registry and no
terraform release is reachable from this machine's package registries): every file parses as HCL2
(python-hcl2), every reference resolves (variables, locals, resources, data sources, module inputs
and outputs), every variable and output is described and used, and the layout follows the parts of
`terraform fmt` that are mechanical (two-space indentation, no tabs or trailing blanks, `=` aligned
within a run of one-line attributes). Where terraform is installed, run `terraform fmt -check
-recursive` and `terraform validate` as well (terraform/README.md)."""

import re
import sys
from pathlib import Path

import hcl2

ROOT = Path(__file__).resolve().parent
REF = re.compile(r"(?<![\w.\"-])(var|local|module|data)\.([A-Za-z_][\w-]*)(?:\.([A-Za-z_][\w-]*))?")
RESOURCE_REF = re.compile(r"(?<![\w.\"/:-])((?:aws|random)_[a-z0-9_]+)\.([a-z_][a-z0-9_]*)\b")
ATTRIBUTE = re.compile(r"^(\s*)([A-Za-z_][\w-]*)(\s*)=\s*(.*)$")

problems = []


def problem(path, message):
    problems.append(f"{path.relative_to(ROOT.parent)}: {message}")


def strip_comments(text):
    return "\n".join(re.sub(r"(^|\s)#.*$", "", line) for line in text.splitlines())


def check_layout(path, text):
    lines = text.split("\n")
    run = []  # (line number, column of '=') of consecutive one-line attributes at one indent

    def close_run():
        columns = {col for _, col in run}
        if len(columns) > 1:
            problem(path, f"lines {run[0][0]}-{run[-1][0]}: '=' not aligned (terraform fmt)")
        run.clear()

    depth_indent = None
    for number, line in enumerate(lines, 1):
        if "\t" in line:
            problem(path, f"line {number}: tab")
        if line != line.rstrip():
            problem(path, f"line {number}: trailing whitespace")
        indent = len(line) - len(line.lstrip(" "))
        if line.strip() and indent % 2:
            problem(path, f"line {number}: indentation not a multiple of two")
        match = ATTRIBUTE.match(line)
        single_line = match and not re.search(r"[\[{(]\s*$", match.group(4)) and not match.group(4).startswith("<<")
        if match:
            if run and indent != depth_indent:
                close_run()
            depth_indent = indent
            if match.group(3) == "":
                problem(path, f"line {number}: no space before '='")
            if single_line:
                run.append((number, len(match.group(1)) + len(match.group(2)) + len(match.group(3))))
            else:
                # An attribute whose value spans lines stands outside alignment, like fmt does.
                close_run()
        else:
            close_run()
    close_run()
    if not text.endswith("\n") or text.endswith("\n\n"):
        problem(path, "must end with exactly one newline")


def unquote(value):
    """python-hcl2 8 keeps the quotes of labels and strings and marks blocks with __is_block__."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def labelled(blocks):
    for block in blocks:
        for name, body in block.items():
            if not name.startswith("__"):
                yield unquote(name), body


def declared(module_dir):
    decl = {"variable": {}, "output": {}, "local": set(), "resource": set(), "data": set(), "module": {}}
    texts = {}
    for path in sorted(module_dir.glob("*.tf")):
        text = path.read_text()
        texts[path] = text
        check_layout(path, text)
        try:
            with path.open() as f:
                doc = hcl2.load(f)
        except Exception as e:  # the parser's own message names line and column
            problem(path, f"does not parse as HCL2: {e}")
            continue
        for name, body in labelled(doc.get("variable", [])):
            decl["variable"][name] = body
            if not unquote(body.get("description", "")):
                problem(path, f"variable {name} has no description")
        for name, body in labelled(doc.get("output", [])):
            decl["output"][name] = body
            if not unquote(body.get("description", "")):
                problem(path, f"output {name} has no description")
        for block in doc.get("locals", []):
            decl["local"].update(k for k in block if not k.startswith("__"))
        for rtype, named in labelled(doc.get("resource", [])):
            decl["resource"].update((rtype, n) for n, _ in labelled([named]))
        for dtype, named in labelled(doc.get("data", [])):
            decl["data"].update((dtype, n) for n, _ in labelled([named]))
        for name, body in labelled(doc.get("module", [])):
            body = {k: v for k, v in body.items() if not k.startswith("__")}
            body["source"] = unquote(body["source"])
            decl["module"][name] = body
    return decl, texts


def check_module(module_dir, seen):
    if module_dir in seen:
        return seen[module_dir]
    decl, texts = declared(module_dir)
    seen[module_dir] = decl
    used_vars = set()
    for path, text in texts.items():
        code = strip_comments(text)
        for kind, name, attr in REF.findall(code):
            if kind == "var":
                used_vars.add(name)
                if name not in decl["variable"]:
                    problem(path, f"var.{name} is not declared")
            elif kind == "local" and name not in decl["local"]:
                problem(path, f"local.{name} is not declared")
            elif kind == "data" and (name, attr) not in decl["data"]:
                problem(path, f"data.{name}.{attr} is not declared")
            elif kind == "module":
                if name not in decl["module"]:
                    problem(path, f"module.{name} is not declared")
                    continue
                child = (module_dir / decl["module"][name]["source"]).resolve()
                outputs = check_module(child, seen)["output"]
                if attr not in outputs:
                    problem(path, f"module.{name}.{attr}: {child.name} has no such output")
        for rtype, name in RESOURCE_REF.findall(code):
            if (rtype, name) not in decl["resource"]:
                problem(path, f"{rtype}.{name} is not declared in {module_dir.name}")
    for name in decl["variable"]:
        if name not in used_vars:
            problem(module_dir / "variables.tf", f"variable {name} is never used")
    for name, body in decl["module"].items():
        child_dir = (module_dir / body["source"]).resolve()
        child = check_module(child_dir, seen)
        given = {k for k in body if k not in ("source", "version", "providers", "depends_on", "count", "for_each")}
        for missing in sorted(k for k, v in child["variable"].items() if "default" not in v and k not in given):
            problem(module_dir / "main.tf", f"module {name}: required input {missing} not given")
        for unknown in sorted(given - set(child["variable"])):
            problem(module_dir / "main.tf", f"module {name}: {child_dir.name} has no variable {unknown}")
    return decl


seen = {}
check_module(ROOT, seen)
for module_dir in sorted((ROOT / "modules").iterdir()):
    if module_dir.resolve() not in seen:
        problem(module_dir, "module is not used by the root configuration")
if problems:
    print("\n".join(problems))
    sys.exit(f"terraform/check.py: {len(problems)} problem(s)")
print(f"terraform/check.py: {len(seen)} modules parse, references resolve, layout is fmt-clean")
