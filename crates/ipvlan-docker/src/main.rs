//! `ipvlan-docker`: a Docker network plugin (driver name `ipvlan-rs`) that answers
//! Docker's remote network driver protocol over HTTP on a Unix socket, as Docker's own
//! ipvlan driver would, with slaves made by the ipvlan-rs daemon. It runs in dockerd's
//! network namespace: parents and new slaves are resolved there.

#![forbid(unsafe_code)]

mod api;
mod control;
mod driver;
mod parent;
mod store;

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use clap::Parser;

use crate::driver::Driver;
use crate::store::Store;

#[derive(Parser, Debug)]
#[command(
    name = "ipvlan-docker",
    version,
    about = "Docker network plugin `ipvlan-rs`: Docker's ipvlan driver on the ipvlan-rs daemon"
)]
struct Args {
    /// The plugin socket Docker discovers (the driver's name is the file's stem).
    #[arg(long, default_value = "/run/docker/plugins/ipvlan-rs.sock")]
    socket: PathBuf,
    /// Where networks and endpoints are kept across restarts.
    #[arg(long, default_value = store::DEFAULT_DIR)]
    state_dir: PathBuf,
}

/// Binds `path`, replacing a stale socket (one nobody answers on) but nothing else.
fn listen(path: &Path) -> Result<tiny_http::Server, String> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(format!("{} exists and is not a socket", path.display()));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(format!("{} is in use by another plugin", path.display()));
        }
        std::fs::remove_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    tiny_http::Server::http_unix(path).map_err(|e| format!("listening on {}: {e}", path.display()))
}

fn serve(args: &Args) -> Result<(), String> {
    let driver = Driver::new(Store::new(&args.state_dir))?;
    let server = listen(&args.socket)?;
    eprintln!(
        "ipvlan-docker: serving driver ipvlan-rs on {} ({} networks in {})",
        args.socket.display(),
        driver.networks(),
        args.state_dir.display()
    );
    let content_type = tiny_http::Header::from_bytes(&b"Content-Type"[..], api::CONTENT_TYPE)
        .map_err(|()| "content type header".to_string())?;
    for mut request in server.incoming_requests() {
        let call = request.url().trim_start_matches('/').to_string();
        let mut body = Vec::new();
        let answer = match request.as_reader().read_to_end(&mut body) {
            Ok(_) => driver.handle(&call, &body),
            Err(e) => Err(format!("reading the request: {e}")),
        };
        // Errors travel as `{"Err": ...}` with status 200: Docker shows them as
        // `remote: <text>`, as for any remote driver.
        let json = match answer {
            Ok(v) => v,
            Err(e) => {
                eprintln!("ipvlan-docker: {call}: {e}");
                serde_json::json!({ "Err": e })
            }
        };
        let response = tiny_http::Response::from_data(json.to_string().into_bytes())
            .with_header(content_type.clone());
        if let Err(e) = request.respond(response) {
            eprintln!("ipvlan-docker: {call}: answering: {e}");
        }
    }
    Ok(())
}

fn main() {
    let args = Args::parse();
    if let Err(e) = serve(&args) {
        eprintln!("ipvlan-docker: {e}");
        std::process::exit(1);
    }
}
