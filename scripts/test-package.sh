#!/usr/bin/env bash
# Tracker as a user installs it: `npm pack` (its prepack builds), then `npm install -g` of
# that tarball into a throwaway prefix, then the installed `tracker` only, run from outside
# the repository: --help, `tracker serve` on a SQLite file, a lock taken, listed, refused to
# another, shown in the queue and the history and released, `tracker run`, the dashboard's
# page and its hashed script, the single-executable client it serves (checked against its
# digest, and run), and SIGTERM stopping the server. better-sqlite3 is compiled
# from source during the install (a minute or two); nothing but npm packages is downloaded.
# Every step and every wait is bounded. Usage: bash scripts/test-package.sh (npm run test:package).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/tracker-package.XXXXXX")"
server_pid=""

cleanup() {
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

step() { echo "test-package: $*"; }
fail() {
  echo "test-package: FAILED: $*" >&2
  if [[ -f "$tmp/server.log" ]]; then
    echo "--- server log ---" >&2
    cat "$tmp/server.log" >&2
  fi
  exit 1
}
# expect_match TEXT REGEX WHAT: TEXT has a line matching the extended REGEX.
expect_match() {
  grep -Eq -- "$2" <<<"$1" || fail "$3: expected a line matching /$2/ in:
$1"
}

# node-gyp builds better-sqlite3 against the headers of the node that runs it, found beside
# it, instead of downloading them (npm's nodedir, unless one is set already).
node_prefix="$(dirname "$(dirname "$(command -v node)")")"
if [[ -z "${npm_config_nodedir:-}" && -f "$node_prefix/include/node/node.h" ]]; then
  export npm_config_nodedir="$node_prefix"
fi
# A dependency's install script would report the install to its vendor: it need not try.
export SCARF_ANALYTICS=false

step "npm pack (prepack: npm run build)"
(cd "$root" && timeout 600 npm pack --pack-destination "$tmp" --silent >"$tmp/pack.log" 2>&1) ||
  fail "npm pack: $(cat "$tmp/pack.log")"
tarballs=("$tmp"/tracker-lock-*.tgz)
[[ ${#tarballs[@]} -eq 1 && -f "${tarballs[0]}" ]] || fail "npm pack made no single tracker-lock-*.tgz"
tarball="${tarballs[0]}"

step "tarball contents"
contents="$(tar -tzvf "$tarball")"
expect_match "$contents" '^-rwx.* package/dist/src/cli/main\.js$' 'the tracker binary, executable'
expect_match "$contents" ' package/dist/src/main\.js$' 'the server entry point'
expect_match "$contents" ' package/dist/proto/tracker/lock/v1alpha1/lock\.proto$' 'the gRPC service definition'
expect_match "$contents" ' package/dist/src/storage/sqlite/migrations/001_create_locks\.sql$' 'the SQLite migrations'
expect_match "$contents" ' package/dist/web/index\.html$' 'the dashboard page'
expect_match "$contents" ' package/dist/web/app-[0-9a-f]{16}\.js$' 'the dashboard bundle, content-hashed'
expect_match "$contents" ' package/dist/cli/tracker\.cjs$' "the client's bundle, for GET /cli/tracker-linux-x64"
if grep -Eq ' package/(src|test|web|scripts)/| package/dist/web/.*\.map$' <<<"$contents"; then
  fail "the tarball holds sources, tests or dashboard source maps:
$(grep -E ' package/(src|test|web|scripts)/| package/dist/web/.*\.map$' <<<"$contents")"
fi
[[ "$(tar -xzOf "$tarball" package/dist/src/cli/main.js | head -n 1)" == '#!/usr/bin/env node' ]] ||
  fail "dist/src/cli/main.js does not start with #!/usr/bin/env node"

step "npm install -g --prefix $tmp/prefix $(basename "$tarball")"
timeout 900 npm install -g --prefix "$tmp/prefix" "$tarball" --no-audit --no-fund \
  --allow-scripts=better-sqlite3 >"$tmp/install.log" 2>&1 ||
  fail "npm install -g: $(tail -n 40 "$tmp/install.log")"
tracker="$tmp/prefix/bin/tracker"
[[ -x "$tracker" ]] || fail "no executable $tracker after the install"

# From here on only the installed package is used, from a folder outside the repository.
cd "$tmp"
export TRACKER_URL="http://127.0.0.1:1" # set for real once the server listens
unset TRACKER_TOKEN TRACKER_CA_FILE TRACKER_CLIENT_CERT_FILE TRACKER_CLIENT_KEY_FILE

step "tracker --help"
help="$(timeout 30 "$tracker" --help)" || fail "tracker --help exited $?"
expect_match "$help" '^Usage: tracker <command>' 'tracker --help'
expect_match "$help" '^  lock acquire ' 'tracker --help lists lock acquire'
serve_help="$(timeout 30 "$tracker" serve --help)" || fail "tracker serve --help exited $?"
expect_match "$serve_help" '--database-url' 'tracker serve --help'

step "tracker serve"
"$tracker" serve --http-port 0 --grpc-port 0 --database-url "sqlite:$tmp/t.db" >"$tmp/server.log" 2>&1 &
server_pid=$!
port=""
for _ in $(seq 1 300); do
  port="$(grep -o '"httpPort":[0-9]*' "$tmp/server.log" | head -n 1 | cut -d: -f2 || true)"
  [[ -n "$port" ]] && break
  kill -0 "$server_pid" 2>/dev/null || fail "tracker serve exited before listening"
  sleep 0.1
done
[[ -n "$port" ]] || fail "tracker serve did not log \"tracker listening\" within 30 s"
export TRACKER_URL="http://127.0.0.1:$port"
health=""
for _ in $(seq 1 100); do
  health="$(curl -fsS --max-time 2 "$TRACKER_URL/healthz" 2>/dev/null || true)"
  [[ -n "$health" ]] && break
  sleep 0.1
done
expect_match "$health" '"status":"ok"' "GET /healthz"

step "lock acquire, list, queue, a refused acquire, release, history"
service="package-test"
id="$(timeout 30 "$tracker" lock acquire --service "$service" --who package-script --ttl 5m)" ||
  fail "lock acquire exited $?"
[[ "$id" =~ ^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$ ]] || fail "lock acquire printed '$id'"
list="$(timeout 30 "$tracker" lock list)" || fail "lock list exited $?"
expect_match "$list" '^SERVICE +WHO +AGE +EXPIRES IN +TOKEN +WAITERS$' 'lock list header'
expect_match "$list" "^$service +package-script +[0-9]+s +[0-9]+m( [0-9]+s)? +1 +0$" 'lock list row'
queue="$(timeout 30 "$tracker" lock queue "$service")" || fail "lock queue exited $?"
expect_match "$queue" "^$service is held by package-script for [0-9]+s \\(lock $id\\)$" 'lock queue'
refused=0
timeout 30 "$tracker" lock acquire --service "$service" --who someone-else >/dev/null 2>"$tmp/refused.err" ||
  refused=$?
[[ $refused -eq 3 ]] || fail "an acquire of a held lock exited $refused, not 3: $(cat "$tmp/refused.err")"
expect_match "$(cat "$tmp/refused.err")" "^tracker: $service is held by package-script" 'the refusal'
released="$(timeout 30 "$tracker" lock release "$id")" || fail "lock release exited $?"
[[ "$released" == "released $id" ]] || fail "lock release printed '$released'"
[[ "$(timeout 30 "$tracker" lock list)" == "no locks held" ]] || fail "a lock is still listed after release"
history="$(timeout 30 "$tracker" lock history --service "$service")" || fail "lock history exited $?"
expect_match "$history" "^[0-9-]+ [0-9:]+Z +released +$service +package-script +[0-9]+s +-$" 'history: released'
expect_match "$history" "^[0-9-]+ [0-9:]+Z +acquired +$service +package-script +- +-$" 'history: acquired'

step "tracker run"
# shellcheck disable=SC2016 # expanded by the command's shell, with the variables tracker sets
ran="$(timeout 30 "$tracker" run --service package-run -- sh -c 'echo "ran $TRACKER_SERVICE $TRACKER_FENCING_TOKEN"')" ||
  fail "tracker run exited $?"
[[ "$ran" == "ran package-run 1" ]] || fail "tracker run printed '$ran'"

step "the dashboard"
page="$(curl -fsS --max-time 10 "$TRACKER_URL/")" || fail "GET / failed"
script="$(grep -Eo 'assets/app-[0-9a-f]{16}\.js' <<<"$page" | head -n 1 || true)"
[[ -n "$script" ]] || fail "the dashboard page loads no assets/app-<hash>.js"
status="$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' "$TRACKER_URL/$script")"
[[ "$status" == "200" ]] || fail "GET /$script answered $status"

step "the single-executable client, made by the server from its node"
curl -fsS --max-time 60 -o "$tmp/tracker-linux-x64" "$TRACKER_URL/cli/tracker-linux-x64" ||
  fail "GET /cli/tracker-linux-x64 failed: $(curl -sS --max-time 60 "$TRACKER_URL/cli/tracker-linux-x64.sha256")"
(cd "$tmp" && curl -fsS --max-time 60 "$TRACKER_URL/cli/tracker-linux-x64.sha256" | sha256sum -c --quiet) ||
  fail "the client's digest does not match"
chmod +x "$tmp/tracker-linux-x64"
# shellcheck disable=SC2016 # expanded by the command's shell, with the variables tracker sets
ran="$(timeout 30 "$tmp/tracker-linux-x64" run --service package-sea -- sh -c 'echo "ran $TRACKER_SERVICE"')" ||
  fail "the single-executable tracker run exited $?"
[[ "$ran" == "ran package-sea" ]] || fail "the single-executable tracker run printed '$ran'"

step "SIGTERM stops the server"
kill -TERM "$server_pid"
for _ in $(seq 1 150); do
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.1
done
kill -0 "$server_pid" 2>/dev/null && fail "tracker serve still runs 15 s after SIGTERM"
code=0
wait "$server_pid" || code=$?
server_pid=""
[[ $code -eq 0 ]] || fail "tracker serve exited $code after SIGTERM"
expect_match "$(cat "$tmp/server.log")" '"msg":"stopped"' 'the server log after SIGTERM'
refused=0
curl -sS --max-time 5 -o /dev/null "$TRACKER_URL/healthz" 2>/dev/null || refused=$?
[[ $refused -eq 7 ]] || fail "the port still answers after SIGTERM (curl exited $refused, not 7)"

step "ok: the packed tracker installs with npm install -g and works"
