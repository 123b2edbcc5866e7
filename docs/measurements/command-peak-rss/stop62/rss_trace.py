"""rss_trace.py OUT.jsonl -- python-module args...: run `python -m MODULE args` in-process; a thread samples RSS every
20 ms with the main thread's stack (innermost frames of hf_binary_bert / transformers / torch) and writes one JSON line per
sample whose RSS is >= 16 MiB above the last written, plus the stack at the overall peak."""
import json, runpy, sys, threading, time, traceback, os
out = open(sys.argv[1], "w")
assert sys.argv[2] == "--"
mod = sys.argv[3]
sys.argv = [mod] + sys.argv[4:]
main_id = threading.get_ident()
t0 = time.time()
def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
def stack():
    fr = sys._current_frames().get(main_id)
    st = traceback.extract_stack(fr) if fr else []
    keep = [f"{os.path.basename(s.filename)}:{s.lineno}:{s.name}" for s in st
            if any(k in s.filename for k in ("hf_binary_bert", "transformers/", "accelerate", "datasets", "torch/autograd"))]
    return keep[-14:]
peak = [0, None]
last = [0]
stop = False
def loop():
    while not stop:
        r = rss()
        if r > peak[0]:
            peak[0], peak[1] = r, (time.time() - t0, stack())
        if r >= last[0] + 16 or r <= last[0] - 64:
            out.write(json.dumps({"t": round(time.time() - t0, 2), "rss_mib": round(r), "stack": stack()[-4:]}) + "\n")
            out.flush()
            last[0] = r
        time.sleep(0.02)
th = threading.Thread(target=loop, daemon=True); th.start()
try:
    runpy.run_module(mod, run_name="__main__")
finally:
    stop = True; th.join()
    out.write(json.dumps({"peak_mib": round(peak[0]), "t": round(peak[1][0], 2), "stack": peak[1][1]}) + "\n")
    out.close()
