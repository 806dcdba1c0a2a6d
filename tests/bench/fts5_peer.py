"""The peer of bench-knowledge: the same corpus and the same queries over
SQLite FTS5 (bm25 ranking), timed the same way. Reads the corpus (JSON
lines) and the queries (JSON lines), prints one JSON line of results."""
import json
import os
import sqlite3
import sys
import time

corpus_path, queries_path, db_path = sys.argv[1], sys.argv[2], sys.argv[3]
if os.path.exists(db_path):
    os.remove(db_path)
db = sqlite3.connect(db_path)
db.execute("create table inc(rowid integer primary key, id text, service text, status text, opened integer)")
db.execute("create virtual table fts using fts5(title, body, root_cause, resolution)")
t = time.perf_counter()
with open(corpus_path) as f:
    for n, line in enumerate(f, 1):
        r = json.loads(line)
        db.execute("insert into inc values (?,?,?,?,?)", (n, r["id"], r["service"], r["status"], r["opened"]))
        db.execute("insert into fts(rowid, title, body, root_cause, resolution) values (?,?,?,?,?)",
                   (n, r["title"], r["body"], r["root_cause"], r["resolution"]))
db.commit()
build = time.perf_counter() - t

def fts_expr(q):
    parts = ['"%s"' % w for w in q["words"]]
    if q.get("phrase"):
        parts.append('"%s"' % q["phrase"])
    if q.get("prefix"):
        parts.append("%s*" % q["prefix"])
    if q.get("any"):
        parts.append("(%s)" % " OR ".join('"%s"' % w for w in q["any"]))
    expr = " AND ".join(parts)
    for w in q.get("not", []):
        expr = '%s NOT "%s"' % (expr, w)
    return expr

times = []
counts = 0
with open(queries_path) as f:
    queries = [json.loads(l) for l in f]
for q in queries:
    sql = "select inc.id from fts join inc on inc.rowid = fts.rowid where fts match ?"
    args = [fts_expr(q)]
    if q.get("service"):
        sql += " and inc.service = ?"
        args.append(q["service"])
    if q.get("status"):
        sql += " and inc.status = ?"
        args.append(q["status"])
    if q.get("since"):
        sql += " and inc.opened >= ?"
        args.append(q["since"])
    sql += " order by bm25(fts) limit 10"
    t = time.perf_counter()
    rows = db.execute(sql, args).fetchall()
    times.append(time.perf_counter() - t)
    counts += len(rows)
times.sort()
rss_kb = 0
with open("/proc/self/status") as f:
    for line in f:
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
print(json.dumps({
    "build_s": build,
    "p50_ms": times[len(times) // 2] * 1000,
    "p99_ms": times[int(len(times) * 0.99)] * 1000,
    "hits": counts,
    "size_bytes": os.path.getsize(db_path),
    "rss_mb": rss_kb / 1024,
}))
