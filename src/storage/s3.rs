//! MinIO / S3 through `aws-sdk-s3`: path-style addressing, static credentials, SigV4
//! presigned URLs.

use std::path::Path;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use chrono::{DateTime, Utc};

use super::{ObjectInfo, ObjectPage, Presigned, StorageError};
use crate::config::S3Config;

#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    endpoint: String,
}

/// Files larger than this are uploaded in parts (S3 requires parts of at least 5 MiB).
const MULTIPART_THRESHOLD: u64 = 16 * 1024 * 1024;
const MULTIPART_PART_SIZE: u64 = 8 * 1024 * 1024;

fn service_error(e: impl std::fmt::Display) -> StorageError {
    StorageError::Service(e.to_string())
}

fn to_chrono(t: &aws_sdk_s3::primitives::DateTime) -> Option<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp(t.secs(), t.subsec_nanos())
}

impl S3Store {
    pub fn new(config: &S3Config) -> Self {
        let scheme = if config.use_ssl { "https" } else { "http" };
        let endpoint = match config.port {
            Some(port) => format!("{scheme}://{}:{port}", config.endpoint),
            None => format!("{scheme}://{}", config.endpoint),
        };
        let credentials = Credentials::new(
            &config.access_key,
            &config.secret_key,
            None,
            None,
            "watchpost-config",
        );
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .endpoint_url(&endpoint)
            .credentials_provider(credentials)
            .force_path_style(true)
            // Presigned PUTs must accept any body the client sends, so no checksum is baked in.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            // A stopped or unreachable S3 server answers requests with a 503 in seconds
            // rather than holding them (the SDK retries a refused connection itself).
            .timeout_config(
                aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(std::time::Duration::from_secs(3))
                    .build(),
            )
            .build();
        Self {
            client: Client::from_conf(conf),
            bucket: config.bucket.clone(),
            endpoint,
        }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Creates the bucket if it does not exist. Fails if the service cannot be reached.
    pub async fn ensure_bucket(&self) -> Result<(), StorageError> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let not_found = e.as_service_error().is_some_and(|s| s.is_not_found());
                if !not_found {
                    return Err(service_error(aws_sdk_s3::error::DisplayErrorContext(e)));
                }
                self.client
                    .create_bucket()
                    .bucket(&self.bucket)
                    .send()
                    .await
                    .map_err(|e| service_error(aws_sdk_s3::error::DisplayErrorContext(e)))?;
                tracing::info!(bucket = %self.bucket, "created bucket");
                Ok(())
            }
        }
    }

    fn presigning(ttl: Duration) -> Result<PresigningConfig, StorageError> {
        PresigningConfig::expires_in(ttl).map_err(service_error)
    }

    fn expiry(ttl: Duration) -> DateTime<Utc> {
        crate::time::now() + chrono::Duration::from_std(ttl).unwrap_or_default()
    }

    pub async fn presign_put(
        &self,
        key: &str,
        content_type: Option<&str>,
        content_length: Option<u64>,
        ttl: Duration,
    ) -> Result<Presigned, StorageError> {
        let mut request = self.client.put_object().bucket(&self.bucket).key(key);
        if let Some(ct) = content_type {
            request = request.content_type(ct);
        }
        if let Some(n) = content_length {
            // Signed: S3 refuses the PUT unless Content-Length is exactly this.
            request = request.content_length(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let presigned = request
            .presigned(Self::presigning(ttl)?)
            .await
            .map_err(service_error)?;
        Ok(Presigned {
            url: presigned.uri().to_string(),
            expires_at: Self::expiry(ttl),
        })
    }

    pub async fn presign_get(&self, key: &str, ttl: Duration) -> Result<Presigned, StorageError> {
        let presigned = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(Self::presigning(ttl)?)
            .await
            .map_err(service_error)?;
        Ok(Presigned {
            url: presigned.uri().to_string(),
            expires_at: Self::expiry(ttl),
        })
    }

    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StorageError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(ObjectInfo {
                key: key.to_string(),
                size: out.content_length().unwrap_or(0).max(0) as u64,
                last_modified: out.last_modified().and_then(to_chrono),
            })),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(service_error(aws_sdk_s3::error::DisplayErrorContext(e))),
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| service_error(aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(())
    }

    pub async fn put_file(
        &self,
        key: &str,
        path: &Path,
        content_type: &str,
    ) -> Result<(), StorageError> {
        let size = tokio::fs::metadata(path).await?.len();
        if size > MULTIPART_THRESHOLD {
            return self.put_file_multipart(key, path, content_type, size).await;
        }
        let body = ByteStream::from_path(path).await.map_err(service_error)?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(body)
            .send()
            .await
            .map_err(|e| service_error(aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(())
    }

    /// A large file goes up in parts (read one at a time, so memory stays at one part);
    /// a failure aborts the upload so no orphaned parts stay billed in the bucket.
    async fn put_file_multipart(
        &self,
        key: &str,
        path: &Path,
        content_type: &str,
        size: u64,
    ) -> Result<(), StorageError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .send()
            .await
            .map_err(|e| service_error(aws_sdk_s3::error::DisplayErrorContext(e)))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| service_error("no upload id in CreateMultipartUpload's answer"))?
            .to_string();
        let result = self.upload_parts(key, path, size, &upload_id).await;
        if result.is_err() {
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }

    async fn upload_parts(
        &self,
        key: &str,
        path: &Path,
        size: u64,
        upload_id: &str,
    ) -> Result<(), StorageError> {
        use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
        let mut parts = Vec::new();
        let mut offset = 0u64;
        let mut number = 1i32;
        while offset < size {
            let length = MULTIPART_PART_SIZE.min(size - offset);
            let body = ByteStream::read_from()
                .path(path)
                .offset(offset)
                .length(aws_sdk_s3::primitives::Length::Exact(length))
                .build()
                .await
                .map_err(service_error)?;
            let part = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .content_length(length as i64)
                .body(body)
                .send()
                .await
                .map_err(|e| service_error(aws_sdk_s3::error::DisplayErrorContext(e)))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(part.e_tag().map(str::to_string))
                    .build(),
            );
            offset += length;
            number += 1;
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| service_error(aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(())
    }

    pub async fn list(
        &self,
        prefix: Option<&str>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ObjectPage, StorageError> {
        let mut request = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .max_keys(limit.clamp(1, 1000) as i32);
        if let Some(p) = prefix {
            request = request.prefix(p);
        }
        if let Some(c) = cursor {
            request = request.start_after(c);
        }
        let out = request
            .send()
            .await
            .map_err(|e| service_error(aws_sdk_s3::error::DisplayErrorContext(e)))?;
        let objects: Vec<ObjectInfo> = out
            .contents()
            .iter()
            .filter_map(|o| {
                Some(ObjectInfo {
                    key: o.key()?.to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    last_modified: o.last_modified().and_then(to_chrono),
                })
            })
            .collect();
        let next_cursor = if out.is_truncated().unwrap_or(false) {
            objects.last().map(|o| o.key.clone())
        } else {
            None
        };
        Ok(ObjectPage {
            objects,
            next_cursor,
        })
    }

    pub async fn check(&self) -> Result<(), StorageError> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| service_error(aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(())
    }
}
