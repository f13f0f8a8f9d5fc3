// Certificates made at test time, in a temporary folder, with Debian's
// openssl command: a CA; a server certificate it signed for localhost and
// 127.0.0.1; a client certificate it signed (mutual TLS); and an unrelated CA
// that signed nothing the server shows. EC P-256 keys, valid for two days.
// And the memcached flags that serve them (memcached -Z).

#ifndef TIERCACHE_TESTS_INTEGRATION_TLS_CERTIFICATES_H_
#define TIERCACHE_TESTS_INTEGRATION_TLS_CERTIFICATES_H_

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

namespace tiercache::testing {

class TlsCertificates {
 public:
  TlsCertificates() {
    char dir[] = "/tmp/tiercache-tls-XXXXXX";
    if (::mkdtemp(dir) == nullptr) std::abort();
    dir_ = dir;
    ok_ = MakeCa("ca", "tiercache test CA") && MakeCa("other-ca", "an unrelated CA") &&
          MakeSigned("server", "localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1") &&
          MakeSigned("client", "tiercache test client", "extendedKeyUsage=clientAuth");
  }
  ~TlsCertificates() { std::system(("rm -rf '" + dir_ + "'").c_str()); }

  bool ok() const { return ok_; }
  std::string Path(const std::string& name) const { return dir_ + "/" + name; }
  std::string ca() const { return Path("ca.crt"); }
  std::string other_ca() const { return Path("other-ca.crt"); }
  std::string client_cert() const { return Path("client.crt"); }
  std::string client_key() const { return Path("client.key"); }

  // memcached's arguments for a TLS listener; `verify_clients`: the server
  // requires a client certificate signed by the CA (mutual TLS).
  std::vector<std::string> ServerArgs(bool verify_clients = false) const {
    std::string settings =
        "ssl_chain_cert=" + Path("server.crt") + ",ssl_key=" + Path("server.key");
    // memcached's ssl_verify_mode 2: require a client certificate.
    if (verify_clients) settings += ",ssl_ca_cert=" + ca() + ",ssl_verify_mode=2";
    return {"-Z", "-o", settings};
  }

 private:
  bool Run(const std::string& command) const {
    return std::system((command + " >'" + dir_ + "/openssl.log' 2>&1").c_str()) == 0;
  }
  std::string Key(const std::string& name) const {
    return "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out '" +
           Path(name + ".key") + "'";
  }
  bool MakeCa(const std::string& name, const std::string& subject) const {
    return Run(Key(name)) &&
           Run("openssl req -x509 -new -key '" + Path(name + ".key") + "' -subj '/CN=" + subject +
               "' -days 2 -out '" + Path(name + ".crt") + "'");
  }
  bool MakeSigned(const std::string& name, const std::string& subject,
                  const std::string& extension) const {
    std::ofstream(Path(name + ".ext")) << extension << "\n";
    return Run(Key(name)) &&
           Run("openssl req -new -key '" + Path(name + ".key") + "' -subj '/CN=" + subject +
               "' -out '" + Path(name + ".csr") + "'") &&
           Run("openssl x509 -req -in '" + Path(name + ".csr") + "' -CA '" + ca() + "' -CAkey '" +
               Path("ca.key") + "' -CAcreateserial -days 2 -extfile '" + Path(name + ".ext") +
               "' -out '" + Path(name + ".crt") + "'");
  }

  std::string dir_;
  bool ok_ = false;
};

}  // namespace tiercache::testing

#endif  // TIERCACHE_TESTS_INTEGRATION_TLS_CERTIFICATES_H_
