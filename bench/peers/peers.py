"""The peers Aurora is compared with, and the three measurements made of each.

    bash bench/peers/install.sh && python bench/peers/peers.py     (or: make bench-peers)

For n8n 1.123 (npm, its default SQLite, every execution stored), Prefect 3 (its own server on
SQLite, a flow served by a runner polling every second) and Aurora (``aurora up`` on the
embedded default, and on Redis + SQLite):

- one request → done, sequential, p50 (n8n: a webhook that answers when its last node finished;
  Prefect: ``run_deployment`` until the flow run is completed; Aurora: ``POST /workflows`` with
  ``Prefer: wait``);
- 8 clients in a closed loop for ``LOOP_SECONDS``: done per second;
- idle RSS of the whole stack (every process it started), 10 s after the last request.

Ratios are Aurora's against each peer, measured in the same invocation.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from harness import ROOT, LeanClient, aurora_env, free_port, percentile, tree_rss_mb  # noqa: E402

CACHE = Path(os.environ.get("PEERS_CACHE", HERE / ".cache"))
N8N = CACHE / "n8n" / "node_modules" / ".bin" / "n8n"
PREFECT = CACHE / "prefect" / "bin"
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/12")
SEQUENTIAL = int(os.environ.get("PEERS_SEQUENTIAL", "100"))
LOOP_SECONDS = float(os.environ.get("PEERS_LOOP_SECONDS", "10"))
CLIENTS = 8
IDLE_SETTLE = 10.0


def n8n_installed() -> bool:
    return N8N.exists()


def prefect_installed() -> bool:
    return (PREFECT / "prefect").exists()


def client(local: threading.local, url: str) -> LeanClient:
    """This thread's kept-alive connection to ``url``: the same lean client for every peer (the
    client's own cost on these two cores stays out of the figures; bench/harness.py)."""
    found = getattr(local, "client", None)
    if found is None:
        found = local.client = LeanClient(url)
    return found


def closed_loop(call: Any, seconds: float = LOOP_SECONDS, clients: int = CLIENTS) -> float:
    """Done per second with ``clients`` threads each calling ``call()`` back to back."""
    stop = time.monotonic() + seconds
    counts = [0] * clients

    def loop(i: int) -> None:
        while time.monotonic() < stop:
            call()
            counts[i] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return round(sum(counts) / (time.monotonic() - started), 1)


def sequential(call: Any, n: int, warm: int = 5) -> dict[str, float]:
    times = []
    for i in range(n + warm):
        started = time.perf_counter()
        call()
        if i >= warm:
            times.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": round(percentile(times, 50), 2), "p95_ms": round(percentile(times, 95), 2)}


class Peer:
    """A stack started in a private folder; everything it started is stopped on exit."""

    name = "peer"

    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix=f"peer-{self.name}-"))
        self.procs: list[subprocess.Popen] = []

    def spawn(self, args: list[str], env: dict[str, str], log: str) -> subprocess.Popen:
        handle = open(self.home / log, "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(args, env=env, cwd=self.home, stdout=handle, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def rss_mb(self) -> float:
        return round(sum(tree_rss_mb(p.pid) for p in self.procs if p.poll() is None), 1)

    def __enter__(self) -> Peer:
        try:
            self.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        shutil.rmtree(self.home, ignore_errors=True)

    def start(self) -> None:
        raise NotImplementedError

    def done(self) -> None:
        raise NotImplementedError

    def sequential(self, n: int = SEQUENTIAL) -> dict[str, float]:
        return sequential(self.done, n)

    def measure(self) -> dict[str, Any]:
        figures: dict[str, Any] = dict(self.sequential())
        figures["loop_done_per_s"] = closed_loop(self.done)
        time.sleep(IDLE_SETTLE)
        figures["idle_rss_mb"] = self.rss_mb()
        return figures


def _wait(url: str, timeout: float = 180, ok: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            response = requests.get(url, timeout=2)
            if response.status_code == 200 and (ok is None or ok(response)):
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not come up in {timeout:.0f} s")


# -- n8n ---------------------------------------------------------------------------------------

#: a webhook that answers with the output of its last node, then one node that sets a field
N8N_WORKFLOW = {
    "id": "AuroraBench000001",
    "name": "bench",
    "active": False,
    "settings": {"executionOrder": "v1"},
    "connections": {"Webhook": {"main": [[{"node": "Set", "type": "main", "index": 0}]]}},
    "nodes": [
        {"id": "8b1f2a6e-0000-4000-8000-000000000001", "name": "Webhook", "type": "n8n-nodes-base.webhook",
         "typeVersion": 2, "position": [0, 0], "webhookId": "8b1f2a6e-0000-4000-8000-0000000000aa",
         "parameters": {"httpMethod": "POST", "path": "bench", "responseMode": "lastNode", "options": {}}},
        {"id": "8b1f2a6e-0000-4000-8000-000000000002", "name": "Set", "type": "n8n-nodes-base.set",
         "typeVersion": 3.4, "position": [200, 0],
         "parameters": {"assignments": {"assignments": [
             {"id": "a1", "name": "done", "value": "={{ $json.body.subject }}", "type": "string"}]},
             "options": {}}},
    ],
}


class N8n(Peer):
    name = "n8n"

    def start(self) -> None:
        self.port = free_port()
        env = {**os.environ, "N8N_USER_FOLDER": str(self.home), "N8N_PORT": str(self.port),
               "N8N_LISTEN_ADDRESS": "127.0.0.1", "N8N_DIAGNOSTICS_ENABLED": "false",
               "N8N_VERSION_NOTIFICATIONS_ENABLED": "false", "N8N_PERSONALIZATION_ENABLED": "false",
               "N8N_TEMPLATES_ENABLED": "false", "N8N_SECURE_COOKIE": "false", "N8N_HIRING_BANNER_ENABLED": "false",
               "N8N_ENFORCE_SETTINGS_FILE_PERMISSIONS": "false", "N8N_RUNNERS_ENABLED": "false",
               "EXECUTIONS_DATA_SAVE_ON_SUCCESS": "all", "DB_TYPE": "sqlite", "DB_SQLITE_POOL_SIZE": "2",
               "N8N_LOG_LEVEL": "warn"}
        self.env = env
        workflow = self.home / "bench.json"
        workflow.write_text(json.dumps([N8N_WORKFLOW]))
        for args in (["import:workflow", f"--input={workflow}"],
                     ["update:workflow", f"--id={N8N_WORKFLOW['id']}", "--active=true"]):
            done = subprocess.run([str(N8N), *args], env=env, cwd=self.home, capture_output=True, text=True,
                                  timeout=300)
            if done.returncode:
                raise RuntimeError(f"n8n {args[0]} failed: {done.stdout[-500:]} {done.stderr[-1500:]}")
        self.spawn([str(N8N), "start"], env, "n8n.log")
        _wait(f"http://127.0.0.1:{self.port}/healthz")
        self.session = threading.local()
        deadline = time.monotonic() + 60
        while True:  # the webhook is registered a moment after /healthz answers
            try:
                self.done()
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def done(self) -> None:
        status, body = client(self.session, f"http://127.0.0.1:{self.port}").post(
            "/webhook/bench", json.dumps({"subject": "Monatsbericht"}).encode(), {"Content-Type": "application/json"})
        if status != 200 or b"Monatsbericht" not in body:
            raise RuntimeError(f"n8n webhook answered {status}: {body[:200]!r}")


# -- Prefect -----------------------------------------------------------------------------------

PREFECT_FLOW = '''
from prefect import flow

@flow(log_prints=False)
def send_report(subject: str = "Monatsbericht") -> str:
    return subject

if __name__ == "__main__":
    send_report.serve(name="bench", limit=8)
'''

PREFECT_CLIENT = '''
import sys, time, json, threading
from prefect.deployments import run_deployment

def once():
    run = run_deployment("send-report/bench", parameters={"subject": "x"}, timeout=120)
    assert run.state.is_completed(), run.state

mode, n, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
once()
if mode == "sequential":
    times = []
    for _ in range(n):
        t = time.perf_counter(); once(); times.append((time.perf_counter() - t) * 1000)
    print(json.dumps(times))
else:
    stop = time.monotonic() + seconds; counts = [0] * 8
    def loop(i):
        while time.monotonic() < stop:
            once(); counts[i] += 1
    started = time.monotonic()
    threads = [threading.Thread(target=loop, args=(i,)) for i in range(8)]
    [t.start() for t in threads]; [t.join() for t in threads]
    print(json.dumps(sum(counts) / (time.monotonic() - started)))
'''


class Prefect(Peer):
    name = "prefect"

    def start(self) -> None:
        port = free_port()
        self.api = f"http://127.0.0.1:{port}/api"
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
                    "PREFECT_HOME": str(self.home), "PREFECT_API_URL": self.api,
                    "PREFECT_SERVER_API_PORT": str(port), "PREFECT_SERVER_API_HOST": "127.0.0.1",
                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_RUNNER_POLL_FREQUENCY": "1",
                    "PREFECT_LOGGING_LEVEL": "WARNING", "PREFECT_SERVER_UI_ENABLED": "false"}
        self.spawn([str(PREFECT / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                   self.env, "server.log")
        _wait(self.api + "/health")
        (self.home / "flow.py").write_text(PREFECT_FLOW)
        (self.home / "client.py").write_text(PREFECT_CLIENT)
        self.spawn([str(PREFECT / "python"), "flow.py"], self.env, "runner.log")
        _wait(self.api + "/health")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # until the runner has registered its deployment
            found = requests.get(f"{self.api}/deployments/name/send-report/bench", timeout=5)
            if found.status_code == 200:
                return
            time.sleep(1)
        raise RuntimeError("the Prefect runner did not register its deployment")

    def _client(self, *args: str) -> Any:
        done = subprocess.run([str(PREFECT / "python"), "client.py", *args], env=self.env, cwd=self.home,
                              capture_output=True, text=True, timeout=900)
        if done.returncode:
            raise RuntimeError(f"prefect client failed: {done.stderr[-1500:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    def sequential(self, n: int = SEQUENTIAL) -> dict[str, float]:
        times = self._client("sequential", str(max(3, n // 10)), "0")  # ~2 s each: a tenth of the count
        return {"p50_ms": round(percentile(times, 50), 2), "p95_ms": round(percentile(times, 95), 2)}

    def measure(self) -> dict[str, Any]:
        figures: dict[str, Any] = dict(self.sequential())
        figures["loop_done_per_s"] = round(self._client("loop", "0", str(max(LOOP_SECONDS, 20))), 2)
        time.sleep(IDLE_SETTLE)
        figures["idle_rss_mb"] = self.rss_mb()
        return figures


# -- Aurora ------------------------------------------------------------------------------------

class Aurora(Peer):
    name = "aurora"
    MAIL = (ROOT / "workflows" / "send_report.yaml").read_bytes()

    def __init__(self, broker: str = "filesystem://"):
        super().__init__()
        self.broker = broker

    def start(self) -> None:
        if self.broker.startswith("redis"):
            import redis

            redis.Redis.from_url(self.broker).flushdb()
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = aurora_env(self.home, AURORA_BROKER_URL=self.broker)
        self.spawn([sys.executable, "-m", "aurora", "up", "--port", str(port), "--port", str(free_port())], env,
                   "up.log")
        _wait(self.url + "/health", ok=lambda r: r.json()["components"]["workers"]["ok"])
        self.key = json.loads(Path(env["AURORA_CLI_CONFIG"]).read_text())["token"]
        self.session = threading.local()

    def done(self) -> None:
        status, body = client(self.session, self.url).post("/workflows", self.MAIL, {
            "Authorization": f"Bearer {self.key}", "Content-Type": "application/yaml", "Prefer": "wait=30"})
        if status != 201 or json.loads(body)["status"] != "succeeded":
            raise RuntimeError(f"aurora answered {status}: {body[:200]!r}")


def main() -> None:
    results: dict[str, Any] = {}
    stacks: list[tuple[str, Any]] = [("aurora_embedded", lambda: Aurora()), ("aurora_redis", lambda: Aurora(REDIS))]
    if n8n_installed():
        stacks.append(("n8n", N8n))
    else:
        print("n8n is not installed: run bench/peers/install.sh", file=sys.stderr)
    if prefect_installed():
        stacks.append(("prefect", Prefect))
    else:
        print("Prefect is not installed: run bench/peers/install.sh", file=sys.stderr)
    for name, make in stacks:
        started = time.monotonic()
        try:
            with make() as peer:
                results[name] = peer.measure()
        except Exception as exc:  # noqa: BLE001 - one peer that fails must not lose the others' figures
            results[name] = {"error": f"{exc.__class__.__name__}: {str(exc)[:300]}"}
        print(f"{name:<16} {json.dumps(results[name])}  ({time.monotonic() - started:.0f} s)", flush=True)
    for ours in ("aurora_embedded", "aurora_redis"):
        mine = results.get(ours, {})
        for peer in ("n8n", "prefect"):
            theirs = results.get(peer, {})
            if "p50_ms" in mine and "p50_ms" in theirs:
                results.setdefault("ratios", {})[f"{ours}_vs_{peer}"] = {
                    "sequential_p50_faster": round(theirs["p50_ms"] / mine["p50_ms"], 1),
                    "loop_done_per_s": round(mine["loop_done_per_s"] / theirs["loop_done_per_s"], 1),
                    "idle_rss": round(mine["idle_rss_mb"] / theirs["idle_rss_mb"], 2)}
    print(json.dumps(results, indent=2))
    import run

    run.record("peers", results)


if __name__ == "__main__":
    main()
