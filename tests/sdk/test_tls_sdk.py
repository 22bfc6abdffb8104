"""The official OpenAI Python SDK over HTTPS terminated by gatewayd itself: HTTP/1.1 and
HTTP/2 (ALPN) with a client that trusts a CA made for the test, and a client that does not
trust it (or asks for another host name) refused."""

from __future__ import annotations

import ssl

import httpx
import openai
import pytest
import trustme

from conftest import Gatewayd, clean_env


@pytest.fixture(scope="module")
def tls_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_gateway(gatewayd_bin, client_key, tls_ca, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gatewayd-tls")
    server_cert = tls_ca.issue_cert("127.0.0.1")
    cert_file, key_file = tmp / "cert.pem", tmp / "key.pem"
    cert_file.write_bytes(b"".join(blob.bytes() for blob in server_cert.cert_chain_pems))
    server_cert.private_key_pem.write_to_path(str(key_file))
    key_file.chmod(0o600)
    config = tmp / "gatewayd.toml"
    config.write_text(f'[server.tls]\ncert_file = "{cert_file}"\nkey_file = "{key_file}"\n')
    gw = Gatewayd(
        gatewayd_bin,
        ["--port", "0", "--config", str(config), "--data-dir", str(tmp / "data")],
        clean_env(API_SERVER_KEY=client_key),
        tmp,
    )
    try:
        gw.wait_listening()
        yield gw
    finally:
        gw.stop()


def _sdk(port: int, key: str, verify, http2: bool, host: str = "127.0.0.1") -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"https://{host}:{port}/v1",
        api_key=key,
        max_retries=0,
        http_client=httpx.Client(verify=verify, http2=http2, trust_env=False),
    )


@pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "http2"])
def test_sdk_over_https(tls_gateway, tls_ca, client_key, http2):
    context = ssl.create_default_context()
    tls_ca.configure_trust(context)
    client = _sdk(tls_gateway.port, client_key, context, http2)
    raw = client.chat.completions.with_raw_response.create(
        model="echo", messages=[{"role": "user", "content": "over tls"}]
    )
    assert raw.http_response.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
    assert raw.parse().choices[0].message.content == "over tls"

    # Streaming through the SDK's accumulator, over the same TLS connection.
    with client.chat.completions.stream(
        model="echo", messages=[{"role": "user", "content": "streamed over tls"}]
    ) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == "streamed over tls"

    # TLS does not replace the key.
    with pytest.raises(openai.AuthenticationError):
        _sdk(tls_gateway.port, "gwd_not-the-key", context, http2).models.list()


def _refused_by_certificate_check(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIConnectionError) as caught:
        client.models.list()
    cause = caught.value.__cause__
    while cause is not None and not isinstance(cause, ssl.SSLCertVerificationError):
        cause = cause.__cause__ or cause.__context__
    assert isinstance(cause, ssl.SSLCertVerificationError), repr(caught.value)


def test_untrusted_or_wrong_host_certificate_is_refused(tls_gateway, tls_ca, client_key):
    # The system store does not know the test CA.
    _refused_by_certificate_check(_sdk(tls_gateway.port, client_key, True, False))
    # The CA is trusted, but the certificate names 127.0.0.1, not localhost.
    context = ssl.create_default_context()
    tls_ca.configure_trust(context)
    _refused_by_certificate_check(_sdk(tls_gateway.port, client_key, context, False, "localhost"))
