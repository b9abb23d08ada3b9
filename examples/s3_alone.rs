//! The same file through `object_store` alone, for `benches/s3.sh` to set
//! beside sft: put (multipart, 8 MiB parts, 2 in flight: what sft does) and
//! get (streamed), timed, nothing else.
//!   s3_alone ENDPOINT BUCKET FILE
//! Credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.

use std::time::Instant;

use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use tokio::io::AsyncReadExt;

const PART: usize = 8 << 20;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, endpoint, bucket, file] = &args[..] else {
        return Err("usage: s3_alone ENDPOINT BUCKET FILE".into());
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let os = AmazonS3Builder::from_env()
        .with_endpoint(endpoint)
        .with_bucket_name(bucket)
        .with_region("us-east-1")
        .with_allow_http(true)
        .build()?;
    let key = Path::from("alone/data");
    let size = std::fs::metadata(file)?.len() as f64;
    let t = Instant::now();
    let mut f = tokio::fs::File::open(file).await?;
    let mut w = WriteMultipart::new_with_chunk_size(os.put_multipart(&key).await?, PART);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        w.wait_for_capacity(2).await?;
        w.write(&buf[..n]);
    }
    w.finish().await?;
    let put = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut got = 0u64;
    let mut s = os.get(&key).await?.into_stream();
    while let Some(chunk) = s.next().await {
        got += chunk?.len() as u64;
    }
    let get = t.elapsed().as_secs_f64();
    os.delete(&key).await?;
    println!(
        "object_store alone: put {:.0} MB/s ({put:.2} s), get {:.0} MB/s ({get:.2} s), {got} bytes",
        size / put / 1e6,
        size / get / 1e6
    );
    // one small object at a time: what each request of a small file costs
    let n = 50;
    let t = Instant::now();
    for i in 0..n {
        let k = Path::from(format!("alone/small/{i}"));
        let opts = object_store::PutOptions::from(object_store::PutMode::Create);
        os.put_opts(&k, vec![7u8; 1024].into(), opts).await?;
    }
    let create = t.elapsed().as_secs_f64() * 1000.0 / n as f64;
    let t = Instant::now();
    for i in 0..n {
        os.get(&Path::from(format!("alone/small/{i}")))
            .await?
            .bytes()
            .await?;
    }
    let read = t.elapsed().as_secs_f64() * 1000.0 / n as f64;
    for i in 0..n {
        os.delete(&Path::from(format!("alone/small/{i}"))).await?;
    }
    println!(
        "object_store alone, 1 KiB objects one at a time: create-if-absent {create:.1} ms, get {read:.1} ms"
    );
    Ok(())
}
