//! The manifest smoke test: render `k8s/overlays/sidecar` with `kubectl kustomize`, take from
//! it exactly what a cluster would get (the ConfigMaps' files: portcullis's config, the
//! policy, Envoy's config; the migration Job's and the app pod's container commands) and run
//! them here with real portcullis and real Envoy. Only ports, addresses (loopback for the
//! pod's), mount paths (a temporary directory per volume), the binaries' locations and the
//! Secret's values are substituted. Then: an allow, a 401 and a 403 through that Envoy.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use crate::support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;
use support::{envoy_bin, portcullis_bin, request, root, start_echo, Portcullis, Proc};

fn kubectl() -> PathBuf {
    let path = root().join(".venv/bin/kubectl");
    assert!(
        path.exists(),
        "kubectl is not installed at {}: run `make test`, which installs it",
        path.display()
    );
    path
}

/// Every object of the rendered overlay.
fn render(overlay: &str) -> Vec<Value> {
    let out = Command::new(kubectl())
        .arg("kustomize")
        .arg(root().join(overlay))
        .output()
        .expect("kubectl kustomize");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8 manifests");
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("a YAML document"))
        .collect()
}

fn object<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name} in the render"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// A pod's volumes laid out in `dir`: mount path -> local directory, with ConfigMap (also
/// projected) and Secret files written there. Secret values come from `secrets`.
struct Volumes {
    dirs: BTreeMap<String, PathBuf>,
}

impl Volumes {
    fn lay_out(
        objects: &[Value],
        pod: &Value,
        container: &Value,
        dir: &Path,
        secrets: &BTreeMap<&str, String>,
    ) -> Self {
        let config_map = |name: &str| -> BTreeMap<String, String> {
            let cm = objects
                .iter()
                .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == name)
                .unwrap_or_else(|| panic!("no ConfigMap {name}"));
            cm["data"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                .collect()
        };
        let mut dirs = BTreeMap::new();
        for mount in container["volumeMounts"].as_array().unwrap() {
            let name = mount["name"].as_str().unwrap();
            let path = mount["mountPath"].as_str().unwrap().to_owned();
            let local = dir.join(name);
            std::fs::create_dir_all(&local).unwrap();
            let volume = pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == name)
                .unwrap_or_else(|| panic!("no volume {name}"));
            let mut files = BTreeMap::new();
            let mut sources = Vec::new();
            if !volume["configMap"].is_null() {
                sources.push(&volume["configMap"]);
            }
            for s in volume["projected"]["sources"]
                .as_array()
                .into_iter()
                .flatten()
            {
                sources.push(&s["configMap"]);
            }
            for source in sources {
                let data = config_map(source["name"].as_str().unwrap());
                match source["items"].as_array() {
                    Some(items) => {
                        for item in items {
                            let key = item["key"].as_str().unwrap();
                            files.insert(
                                item["path"].as_str().unwrap().to_owned(),
                                data[key].clone(),
                            );
                        }
                    }
                    None => files.extend(data),
                }
            }
            if !volume["secret"].is_null() {
                for item in volume["secret"]["items"].as_array().unwrap() {
                    let key = item["key"].as_str().unwrap();
                    files.insert(
                        item["path"].as_str().unwrap().to_owned(),
                        secrets[key].clone(),
                    );
                }
            }
            for (file, text) in files {
                std::fs::write(local.join(file), text).unwrap();
            }
            dirs.insert(path, local);
        }
        Volumes { dirs }
    }

    /// `text` with every mount path replaced by its local directory.
    fn localize(&self, text: &str) -> String {
        // Two passes, so a local path (under /tmp) is never rewritten as a mount path.
        let mut out = text.to_owned();
        for (i, mount) in self.dirs.keys().enumerate() {
            out = out.replace(mount.as_str(), &format!("\u{0}mount{i}\u{0}"));
        }
        for (i, local) in self.dirs.values().enumerate() {
            out = out.replace(&format!("\u{0}mount{i}\u{0}"), local.to_str().unwrap());
        }
        out
    }

    fn rewrite(&self, mount: &str, file: &str, edit: impl Fn(String) -> String) -> PathBuf {
        let path = self.dirs[mount].join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, edit(self.localize(&text))).unwrap();
        path
    }
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// The Secret `portcullis`'s values for this run.
fn secrets(dir: &Path) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        (
            "database-url",
            format!("sqlite://{}", dir.join("portcullis.db").display()),
        ),
        ("jwt-secret", support::SECRET.to_owned()),
        (
            "admin-token",
            "k8s-sidecar-test-admin-token-0123".to_owned(),
        ),
    ])
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs portcullis with a container's args (the image's entrypoint is the binary).
fn run_portcullis(container: &Value, volumes: &Volumes, db: &str) -> (i32, String) {
    let args: Vec<String> = strings(&container["args"])
        .iter()
        .map(|a| volumes.localize(a))
        .collect();
    let out = Command::new(portcullis_bin())
        .args(&args)
        .env("PORTCULLIS_DATABASE_URL", db)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecar_overlay_runs_as_rendered() {
    let objects = render("k8s/overlays/sidecar");
    let dir = tempfile::tempdir().unwrap();
    let secrets = secrets(dir.path());
    let db = secrets["database-url"].clone();

    // The migration Job: its init container, then its container, as the cluster runs them.
    let job = &object(&objects, "Job", "portcullis-migrate")["spec"]["template"]["spec"];
    for c in job["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .chain(job["containers"].as_array().unwrap())
    {
        let name = c["name"].as_str().unwrap();
        let volumes = Volumes::lay_out(&objects, job, c, &dir.path().join(name), &secrets);
        let (code, err) = run_portcullis(c, &volumes, &db);
        assert_eq!(code, 0, "job container {name}: {err}");
    }

    let pod = &object(&objects, "Deployment", "app")["spec"]["template"]["spec"];

    // portcullis: the pod's loopback addresses become ephemeral loopback ports.
    let pc = container(pod, "portcullis");
    let volumes = Volumes::lay_out(&objects, pod, pc, &dir.path().join("portcullis"), &secrets);
    let config = volumes.rewrite("/etc/portcullis", "portcullis.yaml", |text| {
        assert!(text.contains("listen: 127.0.0.1:9001"), "{text}");
        text.replace("listen: 127.0.0.1:9001", "listen: 127.0.0.1:0")
            .replace("admin_listen: 0.0.0.0:9002", "admin_listen: 127.0.0.1:0")
    });
    let args: Vec<String> = strings(&pc["args"])
        .iter()
        .map(|a| volumes.localize(a))
        .collect();
    assert_eq!(args.last().map(String::as_str), Some("serve"));
    let mut cmd = Command::new(portcullis_bin());
    cmd.args(&args).env("PORTCULLIS_DATABASE_URL", &db);
    let proc = Proc::spawn_command(cmd);
    let line = proc.wait_for_log("serving ext_authz");
    // The manifest logs JSON: the address is a field.
    let logged: Value = serde_json::from_str(&line).expect("a JSON log line");
    let portcullis = Portcullis {
        proc,
        addr: logged["fields"]["addr"].as_str().unwrap().parse().unwrap(),
        config: config.clone(),
    };
    portcullis.wait_serving().await;

    // The echo container's program is the example the tests serve in-process.
    let echo = container(pod, "echo");
    let command = strings(&echo["command"]);
    assert_eq!(command.len(), 2, "{command:?}");
    assert!(command[0].ends_with("/echo_upstream"), "{command:?}");
    assert_eq!(command[1], "127.0.0.1:8080");
    let echo_addr = start_echo().await;

    // Envoy: the pod's own command, with the binary, mount paths, ports and the listener's
    // address (the pod's, 0.0.0.0, becomes loopback) substituted.
    let envoy = container(pod, "envoy");
    let volumes = Volumes::lay_out(&objects, pod, envoy, &dir.path().join("envoy"), &secrets);
    let listen = free_port();
    volumes.rewrite("/etc/envoy", "envoy.yaml", |text| {
        let mut text = text;
        for (from, to) in [
            (9001, portcullis.addr.port()),
            (8080, echo_addr.port()),
            (9901, free_port()),
            (10000, listen),
        ] {
            let original = format!("port_value: {from}");
            assert!(text.contains(&original), "envoy.yaml: no {original}");
            text = text.replace(&original, &format!("port_value: {to}"));
        }
        text
    });
    let command = strings(&envoy["command"]);
    assert_eq!(command[..2], ["/bin/sh", "-c"], "{command:?}");
    let script = volumes
        .localize(&command[2])
        .replace(
            "port_value: 10000/address: 0.0.0.0, port_value: 10000",
            &format!("port_value: {listen}/address: 127.0.0.1, port_value: {listen}"),
        )
        .replace("exec envoy ", &format!("exec {} ", envoy_bin().display()));
    assert!(
        script.contains(&format!("127.0.0.1, port_value: {listen}/")),
        "the pod's command no longer rewrites the listener: {script}"
    );
    assert!(!script.contains("0.0.0.0"), "{script}");
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(&script);
    let envoy_proc = Proc::spawn_command(cmd);

    // Ready when the public route answers 200 through Envoy (portcullis healthy there).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = request(listen, "GET", "/healthz", &[]).await {
            if r.status == 200 {
                assert_eq!(r.upstream_header("x-auth-subject-type"), vec!["anonymous"]);
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "envoy from the manifest never served:\n{}",
            envoy_proc.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A token as an operator would mint one, with the pod's config and the Secret's database.
    let mint = |email: &str| {
        let out = Command::new(portcullis_bin())
            .arg("--config")
            .arg(&config)
            .args(["jwt", "mint", "--user", email])
            .env("PORTCULLIS_DATABASE_URL", &db)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let ada = format!("Bearer {}", mint("ada@example.com"));
    let r = request(listen, "GET", "/api/v1/roles", &[("authorization", &ada)])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.upstream_header("x-auth-email"), vec!["ada@example.com"]);
    assert_eq!(
        r.upstream_header("x-auth-permissions"),
        vec!["authenticated,public,roles:read,roles:write"]
    );

    let r = request(listen, "GET", "/api/v1/roles", &[]).await.unwrap();
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.json()["reason"], "missing_credential");

    let grace = format!("Bearer {}", mint("grace@example.com"));
    let r = request(
        listen,
        "POST",
        "/api/v1/roles",
        &[("authorization", &grace), ("x-auth-roles", "admin")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["reason"], "no_matching_activity");
    drop(envoy_proc);
}
