#!/usr/bin/env python3
"""Runs every GoogleTest executable meson registered, each with XML output,
prints each suite's failures and skip reasons, and ends with the line
"N passed, N failed" (skips are counted on the line before). Exit status 1 when anything failed."""
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

build = sys.argv[1] if len(sys.argv) > 1 else "build"
tests = json.loads(subprocess.check_output(["meson", "introspect", build, "--tests"]))
results_dir = os.path.join(build, "test-results")
os.makedirs(results_dir, exist_ok=True)

passed = failed = skipped = 0
for t in tests:
    xml_path = os.path.abspath(os.path.join(results_dir, t["name"] + ".xml"))
    if os.path.exists(xml_path):
        os.remove(xml_path)
    cmd = t["cmd"] + ["--gtest_output=xml:" + xml_path]
    print(f"== {t['name']}: {' '.join(cmd[:1])}", flush=True)
    timeout = t.get("timeout") or 600
    try:
        proc = subprocess.run(cmd, cwd=t.get("workdir") or None, capture_output=True, text=True,
                              timeout=timeout, errors="replace")
        output, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        output = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        rc = "timeout"
    if not os.path.exists(xml_path):
        print(output[-4000:])
        print(f"   suite {t['name']} produced no results (exit {rc}): counted as 1 failure")
        failed += 1
        continue
    root = ET.parse(xml_path).getroot()
    s_pass = s_fail = s_skip = 0
    for case in root.iter("testcase"):
        name = f"{case.get('classname')}.{case.get('name')}"
        fail = case.find("failure")
        skip = case.find("skipped")
        if fail is not None:
            s_fail += 1
            print(f"   FAILED  {name}\n{fail.get('message', '')[:2000]}")
        elif skip is not None or case.get("result") == "skipped" or case.get("status") == "notrun":
            s_skip += 1
            reason = (skip.get("message") if skip is not None else "") or ""
            print(f"   SKIPPED {name}: {reason.strip().splitlines()[-1] if reason.strip() else ''}")
        else:
            s_pass += 1
    if rc not in (0,) and s_fail == 0:
        print(output[-4000:])
        print(f"   suite {t['name']} exited {rc} without a failed test: counted as 1 failure")
        s_fail += 1
    print(f"   {t['name']}: {s_pass} passed, {s_fail} failed, {s_skip} skipped", flush=True)
    passed, failed, skipped = passed + s_pass, failed + s_fail, skipped + s_skip

if skipped:
    print(f"{skipped} skipped (reasons above): a skipped test is not a pass")
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
