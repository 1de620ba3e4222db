//! Raw JWT signing rate per algorithm, beside the token endpoint's rate measured by `idp-bench`
//! (`cargo bench -p idp-actors --bench signing`).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use idp_actors::jwt::Algorithm;
use idp_actors::keyring::keys::SigningKey;
use serde_json::json;

fn signing(criterion: &mut Criterion) {
    let claims = json!({
        "iss": "https://idp.example.com", "sub": "client-1", "aud": "https://api.example.com",
        "exp": 1_900_000_000u64, "iat": 1_899_999_400u64, "client_id": "client-1", "scope": "read write",
        "jti": "AAAkBvH2d2YlqGgqGdYt4fN2b3mN0YlqGgqGdYt4fN2b3m",
    });
    let mut group = criterion.benchmark_group("sign_jwt");
    group.throughput(Throughput::Elements(1));
    for alg in Algorithm::ALL {
        let key = SigningKey::generate(alg).expect("key generation");
        group.bench_function(alg.as_str(), |bench| bench.iter(|| key.sign_jwt("at+jwt", &claims)));
    }
    group.finish();
}

criterion_group!(benches, signing);
criterion_main!(benches);
