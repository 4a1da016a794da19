"""Damage a safetensors output in place (mutant kind st-edit): stdlib only.
usage: st_edit.py PATH EDIT  -- PATH a .safetensors file or a checkpoint directory;
EDIT ulp:REGEX | drop-last | cut:N."""
import json, os, re, struct, sys

path, edit = sys.argv[1], sys.argv[2]
if os.path.isdir(path):
    names = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
    path = os.path.join(path, "model.safetensors" if "model.safetensors" in names else names[0])
raw = open(path, "rb").read()
if edit.startswith("cut:"):
    open(path, "r+b").truncate(int(edit[4:]))
    sys.exit(0)
n = struct.unpack("<Q", raw[:8])[0]
hdr = json.loads(raw[8 : 8 + n])
data = bytearray(raw[8 + n :])
tensors = [(k, v) for k, v in hdr.items() if k != "__metadata__"]
if edit.startswith("ulp:"):
    rx = re.compile(edit[4:])
    hit = [(k, v) for k, v in tensors if rx.search(k)]
    if not hit:
        sys.exit(0)  # nothing this mutant applies to: the output is left as written
    data[hit[0][1]["data_offsets"][0]] ^= 1  # lowest mantissa bit of element 0 (little endian)
elif edit == "drop-last":
    name, t = max(tensors, key=lambda kv: kv[1]["data_offsets"][0])
    del hdr[name]
    data = data[: t["data_offsets"][0]]
else:
    sys.exit("st_edit.py: unknown edit " + edit)
h = json.dumps(hdr, separators=(",", ":")).encode()
h += b" " * (-len(h) % 8)
open(path, "wb").write(struct.pack("<Q", len(h)) + h + bytes(data))
