//! The `vigil` binary as a user runs it: a real process, real signals.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn vigil() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vigil"));
    c.env_remove("RUST_LOG");
    for (k, _) in std::env::vars() {
        if k.starts_with("VIGIL_") {
            c.env_remove(k);
        }
    }
    // Never leave a vigil-data directory in the source tree.
    c.env("VIGIL_DATA_DIR", temp_dir("data"));
    c
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!("vigil-bin-{tag}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)))
}

/// Starts `vigil serve` and waits for the line that says where it listens.
/// Returns the process, the address, and the Owner key the first start
/// printed (empty when the store already had keys).
fn spawn(cmd: &mut Command) -> (Child, String, String) {
    let (child, addr, key, _) = spawn_logged(cmd.stdout(Stdio::null()));
    (child, addr, key)
}

/// Everything a process wrote to a stream, as it comes.
type Output = std::sync::Arc<std::sync::Mutex<String>>;

fn collect(stream: impl Read + Send + 'static, into: &Output) {
    let into = std::sync::Arc::clone(into);
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let mut all = into.lock().unwrap();
            all.push_str(&line);
            all.push('\n');
        }
    });
}

/// [`spawn`], keeping everything the server writes to stderr (and stdout, if piped).
fn spawn_logged(cmd: &mut Command) -> (Child, String, String, Output) {
    let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap();
    let output = Output::default();
    if let Some(stdout) = child.stdout.take() {
        collect(stdout, &output);
    }
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut key = String::new();
    let addr = loop {
        let line = lines.next().expect("vigil exited before listening").unwrap();
        output.lock().unwrap().push_str(&format!("{line}\n"));
        if line.trim_start().starts_with("vgl_") {
            key = line.trim().to_owned();
        }
        if let Some(rest) = line.split(" addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
        // `--log-format json`
        if let Some(rest) = line.split("\"addr\":\"").nth(1) {
            break rest.split('"').next().unwrap().to_owned();
        }
    };
    // Keep draining stderr so that the child never blocks on a full pipe.
    let rest = output.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let mut all = rest.lock().unwrap();
            all.push_str(&line);
            all.push('\n');
        }
    });
    (child, addr, key, output)
}

/// A request with `key` as its bearer token (none when empty).
fn http(addr: &str, key: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    let auth = if key.is_empty() { String::new() } else { format!("Authorization: Bearer {key}\r\n") };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

fn wait_ready(addr: &str) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if TcpStream::connect(addr).is_ok() && http(addr, "", "GET", "/v2/health/ready", "").0 == 200 {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("not ready");
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "vigil did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serve_demo_predicts_and_exits_zero_on_sigterm() {
    let data = temp_dir("demo");
    let serve = || {
        let mut c = vigil();
        c.args(["serve", "--demo", "--addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"]).env("VIGIL_DATA_DIR", &data);
        c
    };
    let (mut child, addr, key) = spawn(&mut serve());
    assert!(key.starts_with("vgl_"), "the first start prints an Owner key");
    wait_ready(&addr);
    let body = breast_cancer_request();
    let (status, text) = http(&addr, &key, "POST", "/v2/models/breast_cancer/infer", &body);
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"probabilities\""), "{text}");
    let (status, text) = http(&addr, "", "POST", "/v2/models/breast_cancer/infer", &body);
    assert_eq!(status, 401, "no key, no prediction: {text}");
    assert!(text.to_lowercase().contains("www-authenticate: bearer"), "{text}");
    let status = terminate(&mut child);
    assert!(status.success(), "{status:?}");

    // The key was shown once: a restart prints none, and the old one still works.
    let (mut child, addr, again) = spawn(&mut serve());
    assert!(again.is_empty(), "a second start prints no key");
    wait_ready(&addr);
    assert_eq!(http(&addr, &key, "POST", "/v2/models/breast_cancer/infer", &body).0, 200);
    assert!(terminate(&mut child).success());
    let stored = std::fs::read(data.join("vigil.db")).unwrap();
    assert!(!stored.windows(key.len()).any(|w| w == key.as_bytes()), "only the key's hash is stored");
    std::fs::remove_dir_all(&data).unwrap();
}

/// `--log-format json`: every line on stderr is a JSON object, and each
/// inference request gets one with its id, principal, endpoint, version,
/// status and stage durations.
#[test]
fn json_logs_have_one_line_per_request() {
    let mut cmd = vigil();
    cmd.args(["serve", "--demo", "--addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--log-format", "json"]);
    let (mut child, addr, _, output) = spawn_logged(cmd.stdout(Stdio::null()));
    wait_ready(&addr);
    let key = output.lock().unwrap().lines().find(|l| l.trim_start().starts_with("vgl_")).unwrap().trim().to_owned();
    let body = breast_cancer_request();
    let mut s = TcpStream::connect(&addr).unwrap();
    write!(
        s,
        "POST /v2/models/breast_cancer/infer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
         x-request-id: \"quoted\"\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let start = Instant::now();
    let line = loop {
        let all = output.lock().unwrap().clone();
        if let Some(line) = all.lines().find(|l| l.contains("\"target\":\"vigil::request\"")) {
            break line.to_owned();
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no request line in: {all}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(terminate(&mut child).success());
    let all = output.lock().unwrap().clone();
    for l in all.lines().filter(|l| l.starts_with('{')) {
        serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"));
    }
    let line: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["request_id"], "\"quoted\"");
    assert_eq!(line["endpoint"], "breast_cancer");
    assert_eq!(line["version"], "1");
    assert_eq!(line["status"], 200);
    assert!(line["principal"].as_str().unwrap().starts_with("key:"), "{line}");
    for stage in ["preprocess_us", "queue_us", "inference_us", "postprocess_us", "total_us"] {
        assert!(line[stage].is_u64(), "{stage}: {line}");
    }
    assert!(line["total_us"].as_u64() >= line["inference_us"].as_u64());
}

#[test]
fn plain_http_off_loopback_needs_an_explicit_flag() {
    let out = vigil().args(["serve", "--addr", "0.0.0.0:0", "--grpc-addr", "127.0.0.1:0"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to serve plain HTTP") && err.contains("--insecure-no-tls"), "{err}");
    let (mut child, addr, _) =
        spawn(vigil().args(["serve", "--addr", "0.0.0.0:0", "--grpc-addr", "127.0.0.1:0", "--insecure-no-tls"]));
    let port = addr.rsplit(':').next().unwrap();
    wait_ready(&format!("127.0.0.1:{port}"));
    assert!(terminate(&mut child).success());
}

#[test]
fn environment_beats_the_file_and_flags_beat_the_environment() {
    let dir = std::env::temp_dir().join(format!("vigil-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("vigil.toml");
    std::fs::write(&file, "addr = '127.0.0.1:0'\ngrpc_addr = '127.0.0.1:0'\ndemo = false\n").unwrap();

    // The file says no demo, the environment says demo: the demo is served.
    let (mut child, addr, key) =
        spawn(vigil().args(["serve", "--config", file.to_str().unwrap()]).env("VIGIL_DEMO", "true"));
    wait_ready(&addr);
    assert_eq!(http(&addr, &key, "GET", "/v2/models/digits_cnn/ready", "").0, 200);
    assert!(terminate(&mut child).success());

    // The flag says no demo over the environment: only the (empty) registry serves.
    let (mut child, addr, key) =
        spawn(vigil().args(["serve", "--config", file.to_str().unwrap(), "--demo=false"]).env("VIGIL_DEMO", "true"));
    wait_ready(&addr);
    assert_eq!(http(&addr, &key, "GET", "/v2/models/digits_cnn/ready", "").0, 404);
    assert!(terminate(&mut child).success());

    // Nested keys through the environment: a 100-byte body limit turns a bigger body into 413.
    let (mut child, addr, key) = spawn(
        vigil()
            .args(["serve", "--demo", "--addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"])
            .env("VIGIL_LIMITS__MAX_BODY_BYTES", "100"),
    );
    wait_ready(&addr);
    assert_eq!(http(&addr, &key, "POST", "/v2/models/breast_cancer/infer", &" ".repeat(200)).0, 413);
    assert!(terminate(&mut child).success());
    let out = vigil()
        .args(["serve", "--demo", "--addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"])
        .env("VIGIL_LIMITS__MAX_BODY_BYTES", "lots")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'lots' for '--max-body-bytes"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn help_documents_every_key() {
    let out = vigil().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for key in [
        "--addr",
        "--model-repository",
        "--demo",
        "--config",
        "--max-body-bytes",
        "--max-tensor-elements",
        "--data-dir",
        "--database-url",
        "--artifact-store",
        "VIGIL_ADDR",
        "VIGIL_LIMITS__MAX_BODY_BYTES",
        "max_tensor_elements",
        "--insecure-no-tls",
        "--bootstrap-key-file",
        "--master-key-file",
        "--trusted-proxies",
        "--cors-origins",
        "--audit-stdout",
        "requests_per_second",
    ] {
        assert!(help.contains(key), "{key} missing from --help");
    }
}

#[test]
fn bad_configuration_is_a_clear_error() {
    let out = vigil().args(["serve", "--config", "/no/such/vigil.toml"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    let out = vigil()
        .args(["serve", "--model-repository", "/no/such/dir", "--addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the model repository"));
}

/// `vigil` as a client of a running server: push, deploy, history, rollback,
/// export and apply, with tables for people and `--json` for scripts.
#[test]
fn client_commands_drive_the_registry() {
    let (mut child, addr, key) = spawn(vigil().args(["serve", "--addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"]));
    wait_ready(&addr);
    let server = format!("http://{addr}");
    let run = |args: &[&str]| {
        let out = vigil().args(args).env("VIGIL_SERVER", &server).env("VIGIL_API_KEY", &key).output().unwrap();
        let (stdout, stderr) =
            (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
        (out.status.success(), stdout, stderr)
    };
    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
    let pkg = temp_dir("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::copy(models.join("demo/breast_cancer/1/model.onnx"), pkg.join("model.onnx")).unwrap();
    let dir = pkg.to_str().unwrap();

    let (ok, out, err) = run(&["models", "push", dir, "--name", "fraud"]);
    assert!(ok, "{err}");
    assert!(out.contains("registered fraud version 1"), "{out}");
    std::fs::write(pkg.join("vigil.toml"), "[labels]\nstage = 'canary'\n").unwrap();
    let (ok, out, err) = run(&["models", "push", dir, "--name", "fraud", "--json"]);
    assert!(ok, "{err}");
    let pushed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(pushed["version"]["version"], 2);
    let (ok, out, _) = run(&["models", "list"]);
    assert!(ok && out.lines().next().unwrap().starts_with("NAME") && out.contains("fraud"), "{out}");
    // An archive pushes like a directory.
    std::fs::write(pkg.join("vigil.toml"), "[labels]\nstage = 'archive'\n").unwrap();
    let archive = pkg.with_extension("tar.gz");
    std::fs::write(&archive, vigil_store::package::pack_dir(&pkg).unwrap()).unwrap();
    let (ok, out, err) = run(&["models", "push", archive.to_str().unwrap(), "--name", "fraud"]);
    assert!(ok && out.contains("registered fraud version 3"), "{out}{err}");
    std::fs::remove_file(&archive).unwrap();
    let (ok, out, err) = run(&["models", "alias", "fraud", "production", "2"]);
    assert!(ok && out.contains("fraud/production -> version 2"), "{out}{err}");
    let (ok, out, _) = run(&["models", "show", "fraud", "production", "--json"]);
    assert!(ok, "{out}");
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (shown["version"].clone(), shown["labels"]["stage"].clone()),
        (serde_json::json!(2), serde_json::json!("canary"))
    );
    let (ok, out, _) = run(&["models", "show", "fraud"]);
    assert!(ok && out.contains("production") && out.lines().count() >= 6, "versions and aliases: {out}");

    let (ok, out, err) = run(&["endpoints", "set", "fraud-api", "--model", "fraud", "--traffic", "1=90,2=10"]);
    assert!(ok, "{err}");
    assert!(out.contains("revision 1") && out.contains("v1=90% v2=10%") && out.contains("serving"), "{out}");
    let (ok, _, err) = run(&["endpoints", "set", "fraud-api", "--model", "fraud", "--traffic", "2=100"]);
    assert!(ok, "{err}");
    let (ok, out, _) = run(&["endpoints", "history", "fraud-api"]);
    assert!(ok && out.lines().count() == 3, "{out}");
    let (ok, out, err) = run(&["endpoints", "rollback", "fraud-api"]);
    assert!(ok, "{err}");
    assert!(out.contains("revision 3") && out.contains("v1=90%"), "{out}");
    let (ok, out, err) = run(&["endpoints", "rollback", "fraud-api", "--to", "2"]);
    assert!(ok && out.contains("v2=100%"), "{out}{err}");

    let (ok, exported, err) = run(&["endpoints", "export", "fraud-api"]);
    assert!(ok, "{err}");
    assert!(exported.contains("sha256:") && exported.contains("endpoint = \"fraud-api\""), "{exported}");
    let file = pkg.join("endpoint.toml");
    std::fs::write(&file, exported.replace("fraud-api", "fraud-copy")).unwrap();
    let (ok, out, err) = run(&["endpoints", "apply", file.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("fraud-copy revision 1"), "{out}");
    let (ok, out, _) = run(&["endpoints", "apply", file.to_str().unwrap()]);
    assert!(ok && out.contains("fraud-copy revision 1"), "applying again changes nothing: {out}");
    let (status, body) = http(&addr, &key, "POST", "/v2/models/fraud-copy/infer", &breast_cancer_request());
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("x-vigil-version: 2"), "{body}");

    // Errors are clear and exit non-zero.
    let (ok, _, err) = run(&["endpoints", "set", "fraud-api", "--model", "fraud", "--traffic", "1=50"]);
    assert!(!ok && err.contains("add up to 50"), "{err}");
    let (ok, _, err) = run(&["models", "delete", "fraud", "2"]);
    assert!(!ok && err.contains("409"), "{err}");
    let (ok, _, err) = run(&["models", "push", "/no/such/dir", "--name", "x"]);
    assert!(!ok && err.contains("/no/such/dir"), "{err}");
    assert!(terminate(&mut child).success());
    let (ok, _, err) = run(&["models", "list"]);
    assert!(!ok && err.contains("cannot reach the server"), "{err}");
    std::fs::remove_dir_all(&pkg).unwrap();
}

fn breast_cancer_request() -> String {
    let row = vec!["1.0"; 30].join(",");
    format!(r#"{{"inputs":[{{"name":"features","datatype":"FP32","shape":[1,30],"data":[{row}]}}]}}"#)
}

/// The Owner's commands: keys with roles and scopes, secrets through stdin,
/// and the audit trail with its chain check.
#[test]
fn keys_secrets_and_audit_from_the_command_line() {
    let (mut child, addr, owner, server_output) = spawn_logged(
        vigil()
            .args(["serve", "--demo", "--addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--audit-stdout"])
            .env("RUST_LOG", "debug")
            .stdout(Stdio::piped()),
    );
    wait_ready(&addr);
    let server = format!("http://{addr}");
    let run_as = |key: &str, args: &[&str], stdin: &str| {
        let mut cmd = vigil();
        cmd.args(args).env("VIGIL_SERVER", &server).env("VIGIL_API_KEY", key);
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let run = |args: &[&str]| run_as(&owner, args, "");

    let (ok, out, err) =
        run(&["keys", "create", "--role", "predictor", "--scope", "endpoint:breast_cancer", "--name", "app", "--json"]);
    assert!(ok, "{err}");
    let created: serde_json::Value = serde_json::from_str(&out).unwrap();
    let app = created["key"].as_str().unwrap().to_owned();
    let id = created["record"]["id"].as_str().unwrap().to_owned();
    assert!(created["record"].get("hash").is_none(), "the hash is not sent out");
    let body = breast_cancer_request();
    assert_eq!(http(&addr, &app, "POST", "/v2/models/breast_cancer/infer", &body).0, 200);
    assert_eq!(http(&addr, &app, "GET", "/v2/models/digits_cnn/ready", "").0, 403, "scoped to one endpoint");
    assert_eq!(http(&addr, &app, "GET", "/api/v1/models", "").0, 403, "a Predictor reads no metadata");

    let (ok, out, _) = run(&["keys", "list"]);
    assert!(ok && out.contains(&id) && out.contains("endpoint:breast_cancer") && !out.contains(&app[21..]), "{out}");
    let (ok, _, err) = run_as(&app, &["keys", "list"], "");
    assert!(!ok && err.contains("403"), "{err}");

    let (ok, out, err) = run_as(&owner, &["secrets", "set", "db-password"], "hunter2\n");
    assert!(ok && out.contains("version 1"), "{out}{err}");
    let (ok, out, _) = run(&["secrets", "get", "db-password"]);
    assert!(ok && out.trim() == "hunter2", "{out}");
    let (ok, out, _) = run(&["secrets", "list"]);
    assert!(ok && out.contains("db-password") && !out.contains("hunter2"), "{out}");
    let (ok, _, err) = run(&["secrets", "set", "empty"]);
    assert!(!ok && err.contains("stdin"), "{err}");

    let (ok, out, err) = run(&["keys", "rotate", &id, "--overlap", "1h", "--json"]);
    assert!(ok, "{err}");
    let rotated: serde_json::Value = serde_json::from_str(&out).unwrap();
    let new = rotated["key"].as_str().unwrap().to_owned();
    assert_eq!(http(&addr, &new, "POST", "/v2/models/breast_cancer/infer", &body).0, 200);
    assert_eq!(http(&addr, &app, "POST", "/v2/models/breast_cancer/infer", &body).0, 200, "the overlap");
    let (ok, _, err) = run(&["keys", "revoke", &id]);
    assert!(ok, "{err}");
    assert_eq!(http(&addr, &app, "POST", "/v2/models/breast_cancer/infer", &body).0, 401, "revoked at once");

    let (ok, out, _) = run(&["audit", "list", "--action", "GET /api/v1/secrets/{secret}"]);
    assert!(ok && out.contains("secret:db-password") && out.contains("ok"), "secret reads are audited: {out}");
    let (ok, out, _) = run(&["audit", "list", "--json", "--limit", "1000"]);
    assert!(ok, "{out}");
    assert!(
        !out.contains("hunter2") && !out.contains(&app) && !out.contains(&owner),
        "no secrets or keys in the audit log"
    );
    let (ok, out, err) = run(&["audit", "verify"]);
    assert!(ok && out.contains("intact"), "{out}{err}");
    assert!(terminate(&mut child).success());

    // Everything the server wrote (debug logs, audit lines on stdout): the
    // secret never, keys only once (the first start's own key, shown once).
    std::thread::sleep(Duration::from_millis(200));
    let logged = server_output.lock().unwrap().clone();
    assert!(logged.contains("\"action\":\"GET /api/v1/secrets/{secret}\""), "audit lines on stdout: {logged}");
    assert!(!logged.contains("hunter2"), "a secret value in the server's output");
    assert!(!logged.contains(&app) && !logged.contains(&new), "an API key in the server's output");
    assert_eq!(logged.matches(&owner).count(), 1, "the Owner key, printed once at the first start");
}

/// `vigil monitor baseline` profiles a CSV and attaches it; requests are
/// counted against it; `vigil monitor show` reads the verdicts.
#[test]
fn monitor_baseline_and_show_from_the_command_line() {
    let dir = temp_dir("monitor");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("vigil.toml");
    std::fs::write(&config, "[monitoring]\nwindow_seconds = 1\n").unwrap();
    let config = config.to_str().unwrap();
    let (mut child, addr, key) = spawn(vigil().args([
        "serve",
        "--demo",
        "--addr",
        "127.0.0.1:0",
        "--grpc-addr",
        "127.0.0.1:0",
        "--config",
        config,
    ]));
    wait_ready(&addr);
    let server = format!("http://{addr}");
    let run = |args: &[&str]| {
        let out = vigil().args(args).env("VIGIL_SERVER", &server).env("VIGIL_API_KEY", &key).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Training data in the credit demo's columns, plus a label the spec does not name.
    let csv = dir.join("train.csv");
    let mut text = String::from("age,income,debt_ratio,employment,region,has_mortgage,label\n");
    for i in 0..1500 {
        let employment = ["salaried", "salaried", "retired", "self_employed"][i % 4];
        let region = ["north", "south", "east", "west"][i % 4];
        text.push_str(&format!(
            "{},{},0.{},{employment},{region},{},{}\n",
            20 + i % 50,
            20 + i % 90,
            i % 9,
            i % 3 == 0,
            i % 2
        ));
    }
    std::fs::write(&csv, text).unwrap();
    let csv = csv.to_str().unwrap();
    // The demo reaches the registry in the background: retry until it has.
    let mut attached = (false, String::new(), String::new());
    for _ in 0..100 {
        attached = run(&["monitor", "baseline", csv, "--model", "credit", "--version", "1"]);
        if attached.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ok, out, err) = attached;
    assert!(ok, "{err}");
    assert!(out.contains("attached a reference profile of 6 features (1500 rows) to credit version 1"), "{out}");
    // Or written, to ship in a package as profile.json.
    let written = dir.join("profile.json");
    let (ok, out, err) = run(&["monitor", "baseline", csv, "--out", written.to_str().unwrap()]);
    assert!(ok && out.contains("wrote a profile of 7 features"), "{out}{err}");
    let profile: serde_json::Value = serde_json::from_slice(&std::fs::read(&written).unwrap()).unwrap();
    assert_eq!(profile["rows"], 1500);
    let (ok, _, err) = run(&["monitor", "baseline", csv]);
    assert!(!ok && err.contains("--model and --version"), "{err}");

    let records: Vec<String> = (0..50)
        .map(|i| {
            format!(
                r#"{{"age": {}, "income": 40, "debt_ratio": 0.2, "employment": "salaried", "region": "north"}}"#,
                90 + i % 10
            )
        })
        .collect();
    let body = format!(r#"{{"instances": [{}]}}"#, records.join(","));
    assert_eq!(http(&addr, &key, "POST", "/v1/models/credit:predict", &body).0, 200);
    let start = Instant::now();
    let (ok, out, err) = loop {
        let shown = run(&["monitor", "show", "credit"]);
        if shown.1.contains("DRIFT") || start.elapsed() > Duration::from_secs(15) {
            break shown;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(ok, "{err}");
    let age = out.lines().find(|l| l.contains(" age ")).unwrap_or_default();
    assert!(age.contains("wasserstein_normed") && age.contains("DRIFT") && age.contains("100.0%"), "{out}");
    assert!(out.contains("version 1: ") && !out.contains("label"), "{out}");

    // The HTML report, looked at in a real browser.
    let report = dir.join("report.html");
    let (ok, out, err) = run(&["monitor", "report", "credit", "--out", report.to_str().unwrap()]);
    assert!(ok && out.contains("wrote"), "{out}{err}");
    let html = std::fs::read_to_string(&report).unwrap();
    assert_eq!(html.matches("<section class=\"feature\">").count(), 6, "a section per feature");
    assert!(html.matches("<svg").count() >= 12 && !html.contains("<script"), "a histogram and a series per feature");
    match browser() {
        Some(chromium) => {
            let png = dir.join("report.png");
            let url = format!("file://{}", report.display());
            let shot = Command::new(&chromium)
                .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=900,2400"])
                .arg(format!("--screenshot={}", png.display()))
                .arg(&url)
                .output()
                .unwrap();
            assert!(png.is_file(), "no screenshot: {}", String::from_utf8_lossy(&shot.stderr));
            let bytes = std::fs::read(&png).unwrap();
            assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 20_000, "a blank page? {} bytes", bytes.len());
            // What the browser built from the file: every bar is an element.
            let dom = Command::new(&chromium)
                .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
                .arg(&url)
                .output()
                .unwrap();
            let dom = String::from_utf8_lossy(&dom.stdout);
            assert!(dom.matches("<rect").count() >= 6 * 2 * 4 && dom.contains("Monitoring report: credit"), "{dom}");
            if let Ok(keep) = std::env::var("VIGIL_TEST_KEEP_SCREENSHOT") {
                std::fs::copy(&png, keep).unwrap();
            }
        }
        None => {
            assert!(
                std::env::var_os("VIGIL_TEST_REQUIRE_ALL").is_none(),
                "the report test needs chromium (.ci/run installs it)"
            );
            eprintln!("skipped: the report's browser check needs chromium on PATH");
        }
    }
    assert!(terminate(&mut child).success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Headless Chromium, if installed (Debian's `chromium`).
fn browser() -> Option<std::path::PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"].into_iter().find_map(|name| {
        let found = Command::new("which").arg(name).output().ok()?;
        let path = String::from_utf8_lossy(&found.stdout).trim().to_owned();
        (found.status.success() && !path.is_empty()).then(|| path.into())
    })
}

/// `vigil models profile`: a per-operator table from each backend's profiler,
/// for a model file, a version directory or a repository's model directory.
#[test]
fn models_profile_times_each_operator() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/demo");
    let run = |args: &[&str]| {
        let out = vigil().args(["models", "profile"]).args(args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{args:?}: {text}{}", String::from_utf8_lossy(&out.stderr));
        text
    };
    let cnn = format!("{root}/digits_cnn");
    let json: serde_json::Value =
        serde_json::from_str(&run(&[&cnn, "--backend", "tract", "--runs", "5", "--warmup", "1", "--json"])).unwrap();
    assert_eq!((&json["backend"], &json["runs"]), (&"tract".into(), &5.into()));
    let operators = json["operators"].as_array().unwrap();
    assert!(operators.iter().all(|o| o["calls"] == 5), "{json}");
    let share: f64 = operators.iter().map(|o| o["share"].as_f64().unwrap()).sum();
    assert!((share - 1.0).abs() < 1e-6, "shares add up: {share}");
    assert!(json["wall_us_per_run"].as_f64() >= json["operators_us_per_run"].as_f64());
    let table =
        run(&[&format!("{cnn}/1/model.onnx"), "--backend", "tract", "--runs", "3", "--top", "2", "--batch", "8"]);
    assert!(table.contains("on tract: 3 runs") && table.contains("Im2col"), "{table}");
    assert!(table.contains("more (--top)"), "{table}");
    if std::env::var_os("ORT_DYLIB_PATH").is_some() {
        // The demo's config says nothing of the backend: auto takes ONNX Runtime.
        let table = run(&[&format!("{root}/breast_cancer/1"), "--runs", "3"]);
        assert!(table.contains("on onnxruntime") && table.contains("LinearClassifier"), "{table}");
    } else {
        assert!(std::env::var_os("VIGIL_TEST_REQUIRE_ALL").is_none(), "set ORT_DYLIB_PATH");
    }
    let out = vigil().args(["models", "profile", "/nonexistent/model.onnx"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("neither a model file nor a directory"));
    let out = vigil().args(["models", "profile", root, "--runs", "1"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("no model.onnx"), "{out:?}");
}

/// A model of `n` chained `Identity` nodes (protobuf written by hand): valid,
/// and slow for tract to prepare (seconds for tens of thousands of nodes).
fn identity_chain(n: usize) -> Vec<u8> {
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    fn bytes(field: u64, b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        varint(field << 3 | 2, &mut out);
        varint(b.len() as u64, &mut out);
        out.extend_from_slice(b);
        out
    }
    fn number(field: u64, v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        varint(field << 3, &mut out);
        varint(v, &mut out);
        out
    }
    // ValueInfoProto { name, type: TypeProto { tensor_type: { elem_type: FLOAT, shape: [1] } } }
    let value_info = |name: &str| {
        let shape = bytes(2, &bytes(1, &number(1, 1)));
        let tensor = [number(1, 1), shape].concat();
        [bytes(1, name.as_bytes()), bytes(2, &bytes(1, &tensor))].concat()
    };
    let mut graph = Vec::new();
    for i in 0..n {
        let node =
            [bytes(1, format!("t{i}").as_bytes()), bytes(2, format!("t{}", i + 1).as_bytes()), bytes(4, b"Identity")]
                .concat();
        graph.extend(bytes(1, &node));
    }
    graph.extend(bytes(2, b"chain"));
    graph.extend(bytes(11, &value_info("t0")));
    graph.extend(bytes(12, &value_info(&format!("t{n}"))));
    [number(1, 8), bytes(8, &number(2, 13)), bytes(7, &graph)].concat()
}

/// Crash-loop protection and the audit of a change the process died after
/// (issue 26): the server is killed while it loads the revision a traffic
/// change made. The change was committed with its audit event; the next start
/// skips the revision it died in, serves the one before, says why, and lets the
/// Owner delete the endpoint.
#[test]
fn a_start_that_died_loading_a_revision_skips_it_and_the_change_is_audited() {
    let data = temp_dir("crash-loop");
    std::fs::create_dir_all(&data).unwrap();
    let config = data.join("vigil.toml");
    std::fs::write(&config, "[limits]\nmax_model_nodes = 200000\nload_timeout_ms = 600000\n").unwrap();
    let serve = || {
        let mut c = vigil();
        c.args(["serve", "--addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .arg("--config")
            .arg(&config);
        c
    };
    let (mut child, addr, key) = spawn(&mut serve());
    wait_ready(&addr);
    let server = format!("http://{addr}");
    let client = |args: &[&str]| {
        let mut c = vigil();
        c.args(args).env("VIGIL_SERVER", &server).env("VIGIL_API_KEY", &key);
        c
    };
    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
    let (good, slow) = (temp_dir("good"), temp_dir("slow"));
    for d in [&good, &slow] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::copy(models.join("demo/breast_cancer/1/model.onnx"), good.join("model.onnx")).unwrap();
    std::fs::write(slow.join("model.onnx"), identity_chain(60_000)).unwrap();
    std::fs::write(slow.join("vigil.toml"), "backend = 'tract'\n").unwrap();
    for dir in [&good, &slow] {
        let out = client(&["models", "push", dir.to_str().unwrap(), "--name", "m"]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let out = client(&["endpoints", "set", "ep", "--model", "m", "--traffic", "1=100"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The change to the slow version: committed at once, then loaded (seconds).
    let mut setting = client(&["endpoints", "set", "ep", "--model", "m", "--traffic", "2=100"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !http(&addr, &key, "GET", "/api/v1/endpoints/ep/revisions", "").1.contains("\"revision\":2") {
        assert!(started.elapsed() < Duration::from_secs(20), "revision 2 was never committed");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(setting.try_wait().unwrap().is_none(), "the load finished before the kill: make the model slower");
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = setting.kill();
    let _ = setting.wait();

    let (mut child, addr, _) = spawn(&mut serve());
    wait_ready(&addr);
    let (status, shown) = http(&addr, &key, "GET", "/api/v1/endpoints/ep", "");
    assert_eq!(status, 200, "{shown}");
    let body: serde_json::Value = serde_json::from_str(shown.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["status"]["serving_revision"], 1, "{body}");
    assert_eq!(body["status"]["desired_revision"], 2, "{body}");
    assert!(body["status"]["error"].as_str().unwrap().contains("died while loading"), "{body}");
    let (status, answer) = http(&addr, &key, "POST", "/v2/models/ep/infer", &breast_cancer_request());
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("x-vigil-version: 1"), "{answer}");
    // The killed change has its audit event, and the chain verifies.
    let (_, events) = http(&addr, &key, "GET", "/api/v1/audit?action=PUT&limit=1000", "");
    assert_eq!(events.matches("\"target\":\"endpoint:ep\"").count(), 2, "{events}");
    let (_, verdict) = http(&addr, &key, "GET", "/api/v1/audit/verify", "");
    assert!(verdict.contains("\"intact\":true"), "{verdict}");
    // The Owner removes the endpoint; a third start does not try revision 2 again either.
    assert_eq!(http(&addr, &key, "DELETE", "/api/v1/endpoints/ep", "").0, 204);
    assert!(terminate(&mut child).success());
    let (mut child, addr, _) = spawn(&mut serve());
    wait_ready(&addr);
    assert_eq!(http(&addr, &key, "GET", "/api/v1/endpoints/ep", "").0, 404);
    assert!(terminate(&mut child).success());
    for d in [&data, &good, &slow] {
        let _ = std::fs::remove_dir_all(d);
    }
}
