#!/bin/sh
# Regenerates the test PKI. Keys are for tests and examples only: never deploy them.
set -e
cd "$(dirname "$0")"
days=36500
ec() { openssl ecparam -name prime256v1 -genkey -noout -out "$1"; openssl pkcs8 -topk8 -nocrypt -in "$1" -out "$1.tmp" && mv "$1.tmp" "$1"; }
# Root CA (ECDSA P-256) and an intermediate.
ec ca.key
openssl req -x509 -new -key ca.key -sha256 -days $days -subj "/O=dtls-reactor tests/CN=dtls-reactor test root CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.pem
ec inter.key
openssl req -new -key inter.key -subj "/O=dtls-reactor tests/CN=dtls-reactor test intermediate CA" -out inter.csr
printf "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n" > inter.ext
openssl x509 -req -in inter.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days $days -sha256 -extfile inter.ext -out inter.pem
# Server leaf (ECDSA P-256) for localhost, signed by the root.
ec server.key
openssl req -new -key server.key -subj "/O=dtls-reactor tests/CN=localhost" -out server.csr
printf "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n" > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days $days -sha256 -extfile server.ext -out server.pem
# Server leaf signed by the intermediate (chain tests).
ec chain-server.key
openssl req -new -key chain-server.key -subj "/O=dtls-reactor tests/CN=localhost" -out chain-server.csr
openssl x509 -req -in chain-server.csr -CA inter.pem -CAkey inter.key -CAcreateserial -days $days -sha256 -extfile server.ext -out chain-server.pem
# A second server leaf (ECDSA P-256) for another name, signed by the root
# (certificate selection by SNI).
ec server2.key
openssl req -new -key server2.key -subj "/O=dtls-reactor tests/CN=other.test" -out server2.csr
printf "subjectAltName=DNS:other.test,DNS:*.other.test\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n" > server2.ext
openssl x509 -req -in server2.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days $days -sha256 -extfile server2.ext -out server2.pem
# Server leaf with an RSA-2048 key.
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out server-rsa.key
openssl req -new -key server-rsa.key -subj "/O=dtls-reactor tests/CN=localhost" -out server-rsa.csr
printf "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\nextendedKeyUsage=serverAuth\n" > server-rsa.ext
openssl x509 -req -in server-rsa.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days $days -sha256 -extfile server-rsa.ext -out server-rsa.pem
# Client leaf.
ec client.key
openssl req -new -key client.key -subj "/O=dtls-reactor tests/CN=test client" -out client.csr
printf "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n" > client.ext
openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days $days -sha256 -extfile client.ext -out client.pem
# An unrelated CA (wrong-CA tests) and a self-signed client (untrusted).
ec other-ca.key
openssl req -x509 -new -key other-ca.key -sha256 -days $days -subj "/CN=unrelated CA" \
  -addext "basicConstraints=critical,CA:TRUE" -out other-ca.pem
ec selfsigned.key
openssl req -x509 -new -key selfsigned.key -sha256 -days $days -subj "/CN=self-signed client" -out selfsigned.pem
rm -f *.csr *.ext *.srl
