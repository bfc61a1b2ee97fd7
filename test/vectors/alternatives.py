# Reference outputs for lab/alternatives.ts, computed independently in Python 3.
# Run once: python3 test/vectors/alternatives.py > test/vectors/alternatives.json
#
# jump: Lamping and Veach, "A Fast, Minimal Memory, Consistent Hash Algorithm"
# (Google, 2014), their reference code, on the first 64 bits of the key's MD5
# (big-endian). rendezvous: each node scores MD5("node:key") as a 128-bit
# big-endian integer; the highest score wins, ties to the smaller node name.
# mod N: MD5 of the key as a 128-bit big-endian integer, mod N.
import hashlib, json

def md5int(s):
    return int(hashlib.md5(s.encode('utf-8')).hexdigest(), 16)

def jump(key, num_buckets):
    b, j = -1, 0
    while j < num_buckets:
        b = j
        key = (key * 2862933555777941757 + 1) % (1 << 64)
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b

def rendezvous(key, nodes):
    return max(nodes, key=lambda node: (md5int('%s:%s' % (node, key)), [-ord(c) for c in node]))

nodes = ['127.0.0.1:3000', '127.0.0.1:4000', '127.0.0.1:5000', '127.0.0.1:6001']
keys = [str(i) for i in range(200)] + ['expense-%d' % i for i in range(20)] + ['café', 'Straße', '日本語', '😀', 'ключ', '']
out = {'nodes': nodes, 'vectors': []}
for k in keys:
    h = md5int(k)
    out['vectors'].append({
        'key': k,
        'modN': [h % n for n in (1, 2, 3, 4)],
        'jump': [jump(h >> 64, n) for n in (1, 2, 3, 4, 10, 1000)],
        'rendezvous3': rendezvous(k, nodes[:3]),
        'rendezvous4': rendezvous(k, nodes),
    })
print(json.dumps(out, ensure_ascii=False, indent=1))
