"""Operations tests: the image, the deployment manifests, Redis ACL and TLS, HTTP."""
