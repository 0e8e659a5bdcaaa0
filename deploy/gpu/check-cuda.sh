#!/usr/bin/env bash
# Checks a CUDA build on a GPU machine: runs the same commands with `--device cuda` and
# `--device cpu`, compares what they print (tables, generated text, held-out results) and reports
# both wall times. Exit status 1 if any cuda output differs from the cpu one or a command fails.
#
#     bash deploy/gpu/build-cuda.sh && bash deploy/gpu/check-cuda.sh
#
# Environment: GPU (default cuda; cuda:N), NODE, COORDINATOR (default target/release/{node,
# coordinator}), MODEL (default the committed tiny base), WORK (scratch folder, default a fresh
# temporary one). The CUDA libraries the
# binaries link (libcublas.so.13, …) must be on LD_LIBRARY_PATH; see build-cuda.sh.
set -u -o pipefail
cd "$(dirname "$0")/../.."
NODE=${NODE:-target/release/node}
COORD=${COORDINATOR:-target/release/coordinator}
M=${MODEL:-shared/assets/tiny}
W=${WORK:-$(mktemp -d)}
GPU=${GPU:-cuda} # the device under test (`cuda:N` for another GPU)
mkdir -p "$W"
for b in "$NODE" "$COORD"; do
    [ -x "$b" ] || { echo "no executable $b: build it with deploy/gpu/build-cuda.sh" >&2; exit 2; }
done
G16=(--seq-len 40 --gen-length 16 --block-length 8)
failures=0

# compare A B — "same" if the files are equal; "close (…)" if they differ only in numbers, each
# within 2 % (float reductions run in another order on the GPU); else "DIFFERENT" and status 1.
compare() {
    python3 - "$1" "$2" <<'PY'
import re, sys
a, b = (open(p).read() for p in sys.argv[1:3])
if a == b:
    print("same"); sys.exit(0)
num = r"-?\d+(?:\.\d+)?(?:e-?\d+)?"
ta, tb = re.split(num, a), re.split(num, b)
na, nb = re.findall(num, a), re.findall(num, b)
if ta == tb and len(na) == len(nb):
    worst = max(abs(float(x) - float(y)) / max(abs(float(x)), abs(float(y)), 1e-9) for x, y in zip(na, nb))
    if worst <= 0.02:
        print(f"close (numbers within {worst:.2%})"); sys.exit(0)
print(f"DIFFERENT (diff {sys.argv[1]} {sys.argv[2]})"); sys.exit(1)
PY
}

secs() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$2"; }

# check NAME KEEP WHERE COMMAND… — runs COMMAND with @DEV@ replaced by the GPU device (WHERE = gpu)
# or by it and then by `cpu` (WHERE = both), keeps the output lines matching the extended regex
# KEEP, and compares them between the two runs. @RUN@ becomes `gpu` or `cpu` (for output folders).
check() {
    local name=$1 keep=$2 where=$3
    shift 3
    local runs=("gpu:$GPU") t=() run label dev rc s e args
    [ "$where" = both ] && runs+=("cpu:cpu")
    for run in "${runs[@]}"; do
        label=${run%%:*} dev=${run#*:}
        args=("${@//@DEV@/$dev}")
        args=("${args[@]//@RUN@/$label}")
        s=$(date +%s.%N)
        "${args[@]}" >"$W/$name.$label.log" 2>&1
        rc=$?
        e=$(date +%s.%N)
        t+=("$(secs "$s" "$e")")
        grep -E "$keep" "$W/$name.$label.log" >"$W/$name.$label.kept"
        if [ $rc -ne 0 ] || [ ! -s "$W/$name.$label.kept" ]; then
            echo "| $name | $label run FAILED (rc $rc), see $W/$name.$label.log | | |"
            tail -n 5 "$W/$name.$label.log" | sed 's/^/    /'
            failures=$((failures + 1))
            return
        fi
    done
    local verdict=ok
    if [ "$where" = both ]; then
        verdict=$(compare "$W/$name.gpu.kept" "$W/$name.cpu.kept") || failures=$((failures + 1))
    fi
    echo "| $name | $verdict | ${t[0]} | ${t[1]:-–} |"
}

nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || echo "(no nvidia-smi)"
echo "| check | $GPU vs cpu | $GPU s | cpu s |"
echo "|---|---|--:|--:|"
check eval '^\|' both "$NODE" eval --model "$M" --device @DEV@ --n 8 --mc 2 "${G16[@]}"
check generate '^[A-Za-z]' both "$NODE" generate --model "$M" --device @DEV@ \
    --prompt "I saw one roulvas and five" --gen-length 128 --block-length 32 --threshold 0.9 --cache dual
check finetune '^\|' both "$NODE" finetune --model "$M" --device @DEV@ --domain sentences \
    --steps 150 --lr 1e-2 --targets all --seq-len 40 --eval-n 16 --mc 2 --out "$W/ft-@RUN@"
"$NODE" banks insert --model "$M" --talora "$W/ft-gpu" --domain sentences --out "$W/banks" >"$W/banks.log" 2>&1 ||
    { echo "banks insert failed: $W/banks.log"; failures=$((failures + 1)); }
check eval-dgr '^\|' both "$NODE" eval --model "$M" --device @DEV@ --domain sentences --n 8 --mc 2 \
    "${G16[@]}" --talora "$W/ft-gpu" --dgr --banks "$W/banks"
check generate-dgr '^[A-Za-z]' both "$NODE" generate --model "$M" --device @DEV@ \
    --prompt "I saw one roulvas and five" --gen-length 128 --block-length 32 --threshold 0.9 --cache dual \
    --talora "$W/ft-gpu" --dgr --banks "$W/banks"
check pretrain '^step +200 ' both "$NODE" pretrain --preset tiny --device @DEV@ --steps 200 \
    --batch-size 32 --seq-len 48 --warmup 20 --out "$W/pt-@RUN@"
check simulate '^held-out loss' both "$COORD" simulate --device @DEV@ --model "$M" --rounds 2 \
    --out "$W/sim-@RUN@"
check simulate-processes '^held-out loss' both "$COORD" simulate --device @DEV@ --processes \
    --node-bin "$NODE" --model "$M" --rounds 1 --out "$W/simp-@RUN@"
check simulate-libp2p '^held-out loss' both "$COORD" simulate --device @DEV@ --transport libp2p \
    --model "$M" --rounds 1 --out "$W/siml-@RUN@"

# The completion API on the GPU, over a real socket.
serve_check() {
    "$NODE" serve --model "$M" --device "$GPU" --listen 127.0.0.1:18181 &
    local pid=$!
    python3 - <<'PY'
import json, time, urllib.request, urllib.error
b = "http://127.0.0.1:18181"
for _ in range(300):
    try:
        urllib.request.urlopen(b + "/v1/models", timeout=1)
        break
    except Exception:
        time.sleep(0.1)
def post(body):
    body = dict(model="tiny", **body)
    r = urllib.request.Request(b + "/v1/completions", data=json.dumps(body).encode(),
                               headers={"Content-Type": "application/json"})
    return urllib.request.urlopen(r, timeout=60)
one = json.loads(post({"prompt": "I saw one roulvas and five", "max_tokens": 16}).read())
print(one["choices"][0]["text"])
lines = post({"prompt": "I saw one roulvas and five", "max_tokens": 16, "stream": True}).read().decode().splitlines()
events = [l[5:].strip() for l in lines if l.startswith("data:")]
assert events[-1] == "[DONE]", events[-1]
print("".join(json.loads(e)["choices"][0]["text"] for e in events[:-1]))
try:
    post({"prompt": 5})
    raise SystemExit("a malformed request was accepted")
except urllib.error.HTTPError as e:
    print(e.code)
PY
    local rc=$?
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    return $rc
}
check serve '^( |[0-9])' gpu serve_check

echo
if [ $failures -eq 0 ]; then
    echo "all checks passed (logs in $W)"
else
    echo "$failures check(s) failed (logs in $W)"
    exit 1
fi
