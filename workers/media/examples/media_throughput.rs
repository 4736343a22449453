//! Measures the media worker's two costs on this machine: clamd INSTREAM scan speed (MiB/s) and the image pipeline (images/s).
//!
//! `cargo run --release -p media --example media_throughput` — starts its own clamd with the repo's signatures.

use std::io::Cursor;
use std::path::Path;
use std::time::{Duration, Instant};

use media::{process_image, ImageLimits, Scanner};

fn photo(width: u32, height: u32) -> Vec<u8> {
    // Smooth gradients with some texture: compresses like a photo, not like a flat test card.
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 255 / width) as u8, (y * 255 / height) as u8, ((x ^ y) % 64) as u8 + 96])
    });
    let mut bytes = Vec::new();
    image::DynamicImage::ImageRgb8(image).write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Jpeg).unwrap();
    bytes
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let data_dir = tempfile::tempdir()?;
    let signatures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../media-signatures");
    let clamd = devservers::ClamdServer::start(&signatures, data_dir.path()).await?;
    let scanner = Scanner { address: clamd.address(), timeout: Duration::from_secs(60) };

    for mebibytes in [1usize, 10, 25] {
        let content: Vec<u8> = (0..mebibytes * 1024 * 1024).map(|index| (index.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let rounds = 10;
        let started = Instant::now();
        for _ in 0..rounds {
            scanner.scan_bytes(&content).await?;
        }
        let elapsed = started.elapsed();
        println!(
            "scan {mebibytes:>2} MiB: {:>6.1} ms per file, {:>6.1} MiB/s",
            elapsed.as_secs_f64() * 1000.0 / rounds as f64,
            (mebibytes * rounds) as f64 / elapsed.as_secs_f64()
        );
    }

    let limits = ImageLimits::default();
    for (width, height) in [(1600u32, 1200u32), (4032, 3024)] {
        let jpeg = photo(width, height);
        let rounds = 10;
        let started = Instant::now();
        for _ in 0..rounds {
            process_image(&jpeg, &limits).map_err(anyhow::Error::msg)?;
        }
        let elapsed = started.elapsed();
        println!(
            "image {width}x{height} JPEG ({} KiB): decode + thumbnail + re-encode {:>6.1} ms, {:>5.1} images/s per core",
            jpeg.len() / 1024,
            elapsed.as_secs_f64() * 1000.0 / rounds as f64,
            rounds as f64 / elapsed.as_secs_f64()
        );
    }
    Ok(())
}
