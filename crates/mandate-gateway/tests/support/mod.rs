#![allow(dead_code, reason = "each test binary uses a part of it")]
//! Real parts for the gateway's tests: the gateway binary, nginx from Debian's package, and a
//! Python app, each on a free loopback port and killed when its handle drops.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed (and reaped) on drop, also when a test panics.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// nginx, stopped on drop with SIGTERM so that its master takes its workers down (SIGKILL would
/// orphan them).
pub struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let stopped = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status()
            .is_ok_and(|status| status.success());
        if !stopped {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// A free loopback port (bound and released: the caller binds it next).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections on `port`.
pub fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The Python app echoing what it received; its port.
pub fn echo_app() -> (Killed, u16) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/echo_app.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 is needed for the gateway tests");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let port: u16 = line.trim().parse().expect("the echo app prints its port");
    (Killed(child), port)
}

/// Starts the gateway binary with `config` (TOML) written into `dir`; waits for it to listen
/// on `port`.
pub fn gateway(dir: &Path, name: &str, config: &str, port: u16) -> Killed {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_mandate-gateway"))
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let guard = Killed(child);
    wait_for_port(port, "mandate-gateway");
    guard
}

fn nginx_binary() -> PathBuf {
    for candidate in ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(candidate).exists() {
            return candidate.into();
        }
    }
    panic!("nginx is needed for the gateway tests: apt-get install -y nginx");
}

/// nginx with the repository's server block (`deploy/gateway/nginx.conf`) for `app` and
/// `gateway` (host:port each), listening on `port`, its files in `dir`.
pub fn nginx(dir: &Path, port: u16, gateway: &str, app: &str) -> Nginx {
    nginx_with(dir, port, gateway, app, "")
}

/// [`nginx`] with more server blocks beside the repository's.
pub fn nginx_with(dir: &Path, port: u16, gateway: &str, app: &str, more: &str) -> Nginx {
    let block = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/gateway/nginx.conf"),
    )
    .unwrap()
    .replace("{{LISTEN}}", &format!("127.0.0.1:{port}"))
    .replace("{{GATEWAY}}", gateway)
    .replace("{{APP}}", app)
        + more;
    let root = dir.join("nginx");
    for sub in ["", "temp"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    let temp = root.join("temp");
    // Workers may run as another user than the master; they only write temporary files.
    let _ = Command::new("chmod").arg("0777").arg(&temp).status();
    let t = temp.display();
    let conf = format!(
        "worker_processes 1;\ndaemon off;\npid {root}/nginx.pid;\nerror_log {root}/error.log warn;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {t}/body;\n  proxy_temp_path {t}/proxy;\n  \
         fastcgi_temp_path {t}/fastcgi;\n  uwsgi_temp_path {t}/uwsgi;\n  scgi_temp_path {t}/scgi;\n{block}\n}}\n",
        root = root.display(),
    );
    let path = root.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let child = Command::new(nginx_binary())
        .arg("-p")
        .arg(&root)
        .arg("-e")
        .arg(root.join("error.log"))
        .arg("-c")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let guard = Nginx(child);
    wait_for_port(port, "nginx");
    guard
}
