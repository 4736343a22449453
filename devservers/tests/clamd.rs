//! Starts a real clamd with the repo's signature database and checks EICAR is found alone and inside a larger stream.

use std::path::Path;

use devservers::ClamdServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!H+H*";

/// One INSTREAM exchange by hand (the media worker uses clamav-client; this checks the server, not the client).
async fn scan(address: &str, content: &[u8]) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(address).await?;
    stream.write_all(b"zINSTREAM\0").await?;
    for chunk in content.chunks(64 * 1024) {
        stream.write_all(&(chunk.len() as u32).to_be_bytes()).await?;
        stream.write_all(chunk).await?;
    }
    stream.write_all(&[0, 0, 0, 0]).await?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await?;
    Ok(String::from_utf8_lossy(&reply).trim_end_matches('\0').to_owned())
}

#[tokio::test]
async fn shipped_signatures_find_eicar_alone_and_embedded() -> anyhow::Result<()> {
    let data_dir = tempfile::tempdir()?;
    let signatures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../media-signatures");
    let clamd = ClamdServer::start(&signatures, data_dir.path()).await?;

    assert!(scan(&clamd.address(), EICAR).await?.ends_with("FOUND"));
    let mut embedded = vec![b'a'; 300_000];
    embedded.extend_from_slice(EICAR);
    embedded.extend(std::iter::repeat_n(b'z', 70_000));
    let verdict = scan(&clamd.address(), &embedded).await?;
    assert!(verdict.contains("EICAR") && verdict.ends_with("FOUND"), "{verdict}");
    assert_eq!(scan(&clamd.address(), b"just a text file").await?, "stream: OK");
    Ok(())
}
