//! AWS client construction shared by both programs.
//!
//! The SDK's default chain supplies region and credentials and honours `AWS_ENDPOINT_URL`
//! (and the per-service `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL_SQS` / `AWS_ENDPOINT_URL_DYNAMODB`). When an endpoint is
//! overridden — LocalStack or another S3-compatible store — S3 uses path-style addressing,
//! because virtual-host names like `bucket.127.0.0.1` cannot resolve.
//!
//! The HTTPS client is the SDK's own hyper client over rustls with the *ring* provider and the
//! platform's root certificates, set explicitly so the SDK's default (rustls over aws-lc) is not
//! linked: the relay's size and cold start are goals. The credential chain is the SDK's default
//! minus SSO profiles and `credential_process` (environment, web identity, ECS/Lambda container
//! credentials, IMDS and static or assume-role profiles all work); use `aws configure export-credentials`
//! to run locally from an SSO session.

use aws_config::BehaviorVersion;

/// The S3, SQS and DynamoDB clients, built once at start and cloned cheaply (building one
/// makes no request).
#[derive(Clone, Debug)]
pub struct Clients {
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
}

/// True when the environment overrides the S3 endpoint.
pub fn endpoint_overridden(var: impl Fn(&str) -> Option<String>) -> bool {
    ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"].iter().any(|k| var(k).is_some_and(|v| !v.trim().is_empty()))
}

/// Build clients from the standard AWS environment.
pub async fn clients() -> Clients {
    let sdk = sdk_config().await;
    let path_style = endpoint_overridden(|k| std::env::var(k).ok());
    let s3_conf = aws_sdk_s3::config::Builder::from(&sdk).force_path_style(path_style).build();
    Clients {
        s3: aws_sdk_s3::Client::from_conf(s3_conf),
        sqs: aws_sdk_sqs::Client::new(&sdk),
        dynamodb: aws_sdk_dynamodb::Client::new(&sdk),
    }
}

/// The standard AWS environment as the SDK reads it, with our HTTPS client: for the clients a
/// program needs besides [`Clients`] (the relay's Secrets Manager and SSM).
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).http_client(https_client()).load().await
}

/// The SDK's hyper HTTPS client over rustls + ring, trusting the platform's roots.
pub fn https_client() -> aws_sdk_s3::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_style_follows_endpoint_override() {
        assert!(!endpoint_overridden(|_| None));
        assert!(endpoint_overridden(|k| (k == "AWS_ENDPOINT_URL").then(|| "http://127.0.0.1:4566".into())));
        assert!(endpoint_overridden(|k| (k == "AWS_ENDPOINT_URL_S3").then(|| "http://s3.local".into())));
        assert!(!endpoint_overridden(|k| (k == "AWS_ENDPOINT_URL").then(|| " ".into())));
    }
}
