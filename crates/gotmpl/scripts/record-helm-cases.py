#!/usr/bin/env python3
"""Records new single-template cases for tests/helm_cases.json from real helm.

    record-helm-cases.py TEMPLATES.json

TEMPLATES.json is a list of template texts. Each is rendered as
mychart/templates/t.yaml with tests/helm_cases_values.yaml by `helm template`
($TRUEUP_HELM, default /work/tools/helm/helm); the output (or the error) is
appended to tests/helm_cases.json. Templates already recorded are skipped."""
import json, os, subprocess, sys, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.join(HERE, "..", "tests")
HELM = os.environ.get("TRUEUP_HELM", "/work/tools/helm/helm")


def record(t):
    with tempfile.TemporaryDirectory() as d:
        chart = os.path.join(d, "mychart")
        os.makedirs(os.path.join(chart, "templates"))
        with open(os.path.join(chart, "Chart.yaml"), "w") as f:
            f.write("apiVersion: v2\nname: mychart\nversion: 0.1.0\n")
        with open(os.path.join(TESTS, "helm_cases_values.yaml")) as src, open(
            os.path.join(chart, "values.yaml"), "w"
        ) as dst:
            dst.write(src.read())
        with open(os.path.join(chart, "templates", "t.yaml"), "w") as f:
            f.write(t)
        p = subprocess.run([HELM, "template", "x", chart], capture_output=True, text=True)
        if p.returncode == 0:
            head = "# Source: mychart/templates/t.yaml\n"
            out = p.stdout.split(head, 1)[1] if head in p.stdout else ""
            return {"t": t, "out": out.rstrip("\n")}
        err = p.stderr[p.stderr.find("Error: ") + len("Error: "):]
        err = err.split("\n\nUse --debug flag")[0].rstrip("\n")
        return {"t": t, "err": err}


def main():
    path = os.path.join(TESTS, "helm_cases.json")
    cases = json.load(open(path))
    known = {c["t"] for c in cases}
    for t in json.load(open(sys.argv[1])):
        if t not in known:
            cases.append(record(t))
            print(json.dumps(cases[-1]))
    with open(path, "w") as f:
        json.dump(cases, f, indent=1, ensure_ascii=False)
        f.write("\n")


main()
