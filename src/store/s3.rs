//! Buckets on Amazon S3 (or any S3 API at `aws.endpoint_url`, addressed path-style). `swap` is a
//! conditional write: `If-None-Match: *` to create, `If-Match: <etag>` to replace.

use async_trait::async_trait;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use skyburst_providers::aws::AwsSession;
use skyburst_providers::error_chain;

use super::{check_key, ObjectInfo, ObjectStore, Result, StoreError};

/// An S3 client; buckets are named per call.
#[derive(Clone, Debug)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
}

impl S3Store {
    /// A client on `session`'s region, credentials and endpoint.
    pub fn new(session: &AwsSession) -> Self {
        let mut config = aws_sdk_s3::config::Builder::from(&session.sdk);
        // An overridden endpoint (an emulator, a private endpoint) has no per-bucket DNS names.
        config = config.force_path_style(session.has_endpoint_override());
        if let Some(log) = &session.call_log {
            config = config.interceptor(log.clone());
        }
        Self { client: aws_sdk_s3::Client::from_conf(config.build()) }
    }

    /// The client, for `skyburst aws bootstrap`.
    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    async fn put_if(&self, bucket: &str, key: &str, bytes: Vec<u8>, condition: Condition) -> Result<bool> {
        let request = self.client.put_object().bucket(bucket).key(key).body(ByteStream::from(bytes));
        let request = match condition {
            Condition::None => request,
            Condition::Absent => request.if_none_match("*"),
            Condition::Etag(etag) => request.if_match(etag),
        };
        match request.send().await {
            Ok(_) => Ok(true),
            // Another writer got there first (412), or deleted the object we meant to replace.
            Err(e) if matches!(code(&e), "PreconditionFailed" | "ConditionalRequestConflict" | "NoSuchKey") => {
                Ok(false)
            }
            Err(e) => Err(unavailable(bucket, e)),
        }
    }
}

enum Condition {
    None,
    Absent,
    Etag(String),
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put(&self, bucket: &str, key: &str, bytes: Vec<u8>) -> Result<()> {
        check_key(key)?;
        self.put_if(bucket, key, bytes, Condition::None).await.map(|_| ())
    }

    async fn get(&self, bucket: &str, key: &str) -> Result<Vec<u8>> {
        check_key(key)?;
        Ok(self.get_with_etag(bucket, key).await?.0)
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<ObjectInfo> {
        check_key(key)?;
        match self.client.head_object().bucket(bucket).key(key).send().await {
            Ok(o) => Ok(ObjectInfo {
                key: key.to_string(),
                size: o.content_length().unwrap_or(0).max(0) as u64,
                modified: system_time(o.last_modified()),
            }),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => {
                Err(StoreError::NotFound { bucket: bucket.into(), key: key.into() })
            }
            Err(e) => Err(unavailable(bucket, e)),
        }
    }

    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut pages = self.client.list_objects_v2().bucket(bucket).prefix(prefix).into_paginator().send();
        let mut objects = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| unavailable(bucket, e))?;
            objects.extend(page.contents().iter().filter_map(|o| {
                Some(ObjectInfo {
                    key: o.key()?.to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    modified: system_time(o.last_modified()),
                })
            }));
        }
        // S3 lists in UTF-8 byte order already; sorting keeps the trait's promise for any S3 API.
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<()> {
        check_key(key)?;
        // S3 answers 204 for a key that is not there.
        self.client.delete_object().bucket(bucket).key(key).send().await.map_err(|e| unavailable(bucket, e))?;
        Ok(())
    }

    async fn swap(&self, bucket: &str, key: &str, expected: Option<Vec<u8>>, bytes: Vec<u8>) -> Result<bool> {
        check_key(key)?;
        let Some(expected) = expected else {
            return self.put_if(bucket, key, bytes, Condition::Absent).await;
        };
        let (current, etag) = match self.get_with_etag(bucket, key).await {
            Ok(found) => found,
            Err(StoreError::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        if current != expected {
            return Ok(false);
        }
        // The ETag read with the bytes: a write in between makes S3 refuse this one (412).
        self.put_if(bucket, key, bytes, Condition::Etag(etag)).await
    }
}

impl S3Store {
    async fn get_with_etag(&self, bucket: &str, key: &str) -> Result<(Vec<u8>, String)> {
        let object = match self.client.get_object().bucket(bucket).key(key).send().await {
            Ok(o) => o,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                return Err(StoreError::NotFound { bucket: bucket.into(), key: key.into() })
            }
            Err(e) => return Err(unavailable(bucket, e)),
        };
        let etag = object.e_tag().unwrap_or_default().to_string();
        let bytes = object.body.collect().await.map_err(|e| StoreError::Unavailable {
            bucket: bucket.into(),
            cause: crate::error::explained(format!("reading {key} broke off: {e}"), e),
        })?;
        Ok((bytes.into_bytes().to_vec(), etag))
    }
}

fn system_time(t: Option<&aws_sdk_s3::primitives::DateTime>) -> std::time::SystemTime {
    t.and_then(|t| std::time::SystemTime::try_from(*t).ok()).unwrap_or(std::time::UNIX_EPOCH)
}

fn code<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> &str {
    e.as_service_error().and_then(|s| s.code()).unwrap_or_default()
}

/// A failed S3 call, kept as the cause; the message is the service's code and words.
fn unavailable<E, R>(bucket: &str, e: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let message = match e.as_service_error() {
        Some(s) if s.code() == Some("NoSuchBucket") => {
            "the bucket does not exist; create it with `skyburst aws bootstrap`".to_string()
        }
        Some(s) => format!("{}: {}", s.code().unwrap_or("error"), s.message().unwrap_or_default()),
        None => error_chain(&e),
    };
    StoreError::Unavailable { bucket: bucket.to_string(), cause: crate::error::explained(message, e) }
}
