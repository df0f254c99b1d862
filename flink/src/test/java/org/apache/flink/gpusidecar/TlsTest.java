/*
 * Copyright 2026 The gpu-sidecar Authors
 *
 * Licensed under the Apache License, Version 2.0 (the "License");
 * you may not use this file except in compliance with the License.
 * You may obtain a copy of the License at
 *
 *     http://www.apache.org/licenses/LICENSE-2.0
 *
 * Unless required by applicable law or agreed to in writing, software
 * distributed under the License is distributed on an "AS IS" BASIS,
 * WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
 * See the License for the specific language governing permissions and
 * limitations under the License.
 */

package org.apache.flink.gpusidecar;

import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.math.BigInteger;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyPair;
import java.security.KeyPairGenerator;
import java.security.cert.X509Certificate;
import java.time.Duration;
import java.time.Instant;
import java.util.Base64;
import java.util.Date;
import java.util.List;
import org.apache.flink.gpusidecar.AffineRecords.Answer;
import org.apache.flink.table.api.bridge.java.StreamTableEnvironment;
import org.apache.flink.test.junit5.MiniClusterExtension;
import org.bouncycastle.asn1.x500.X500Name;
import org.bouncycastle.asn1.x509.BasicConstraints;
import org.bouncycastle.asn1.x509.Extension;
import org.bouncycastle.asn1.x509.GeneralName;
import org.bouncycastle.asn1.x509.GeneralNames;
import org.bouncycastle.cert.jcajce.JcaX509CertificateConverter;
import org.bouncycastle.cert.jcajce.JcaX509v3CertificateBuilder;
import org.bouncycastle.operator.jcajce.JcaContentSignerBuilder;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.io.TempDir;

/**
 * The Flink client over TLS, DataStream and SQL, to a sidecar on a loopback TCP port with
 * {@code [sidecar.rpc.tls]} that requires client certificates: with the CA and a certificate
 * the test makes, every record is answered; without a certificate the job fails naming the
 * endpoint; TLS options on a Unix socket are refused.
 */
@Timeout(300)
class TlsTest {
    @RegisterExtension static final MiniClusterExtension MINI_CLUSTER = Jobs.miniCluster();

    private static final AffineRecords fixture = AffineRecords.shared();

    @TempDir Path folder;

    /** A key pair and its certificate, written as PEM files. */
    record Issued(KeyPair keys, X509Certificate cert, Path certFile, Path keyFile) {}

    private static KeyPair keys() throws Exception {
        KeyPairGenerator generator = KeyPairGenerator.getInstance("EC");
        generator.initialize(256);
        return generator.generateKeyPair();
    }

    private static String pem(String type, byte[] der) {
        return "-----BEGIN " + type + "-----\n"
                + Base64.getMimeEncoder(64, "\n".getBytes()).encodeToString(der)
                + "\n-----END " + type + "-----\n";
    }

    /** A certificate for {@code name} signed by {@code issuer} (a self-signed CA without one). */
    private Issued issue(String name, Issued issuer) throws Exception {
        KeyPair keys = keys();
        X500Name subject = new X500Name("CN=" + name);
        Instant now = Instant.now();
        JcaX509v3CertificateBuilder builder = new JcaX509v3CertificateBuilder(
                issuer == null ? subject : new X500Name(issuer.cert().getSubjectX500Principal().getName()),
                BigInteger.valueOf(now.toEpochMilli()).add(BigInteger.valueOf(name.hashCode() & 0xffff)),
                Date.from(now.minus(Duration.ofMinutes(1))),
                Date.from(now.plus(Duration.ofDays(30))),
                subject,
                keys.getPublic());
        if (issuer == null) {
            builder.addExtension(Extension.basicConstraints, true, new BasicConstraints(true));
        } else {
            builder.addExtension(Extension.subjectAlternativeName, false, new GeneralNames(new GeneralName[] {
                new GeneralName(GeneralName.iPAddress, "127.0.0.1"), new GeneralName(GeneralName.dNSName, "localhost")
            }));
        }
        X509Certificate cert = new JcaX509CertificateConverter().getCertificate(builder.build(
                new JcaContentSignerBuilder("SHA256withECDSA")
                        .build(issuer == null ? keys.getPrivate() : issuer.keys().getPrivate())));
        String file = name.replaceAll("[^A-Za-z0-9]", "-");
        Path certFile = Files.writeString(folder.resolve(file + ".pem"), pem("CERTIFICATE", cert.getEncoded()));
        Path keyFile = Files.writeString(folder.resolve(file + ".key"), pem("PRIVATE KEY", keys.getPrivate().getEncoded()));
        return new Issued(keys, cert, certFile, keyFile);
    }

    /** A sidecar on the affine fixture that requires certificates of {@code ca}. */
    private SidecarProcess sidecar(Issued ca) throws Exception {
        Issued server = issue("gpu-sidecar", ca);
        return SidecarProcess.startTls(
                folder,
                "affine",
                "cert-file = \"" + server.certFile() + "\"",
                "key-file = \"" + server.keyFile() + "\"",
                "client-ca-file = \"" + ca.certFile() + "\"");
    }

    @Test
    void dataStreamAndSqlAreAnsweredOverTlsWithAClientCertificate() throws Exception {
        Issued ca = issue("test CA", null);
        Issued client = issue("flink-taskmanager", ca);
        try (SidecarProcess sidecar = sidecar(ca)) {
            int records = 200;
            List<Answer> answers = Jobs.collect(Jobs.infer(
                    Jobs.records(Jobs.environment(), fixture, records, 0),
                    Jobs.inference(sidecar.endpoint())
                            .withTls(ca.certFile().toString(), client.certFile().toString(), client.keyFile().toString()),
                    false,
                    64));
            fixture.assertAnsweredOnce(records, answers);

            StreamTableEnvironment tables = SqlPredictTest.tables(records, -1);
            SqlPredictTest.createModelWith(
                    tables,
                    "scores ARRAY<FLOAT>, best BIGINT",
                    "'endpoint' = '" + sidecar.endpoint() + "', 'model' = 'affine', 'tls-ca' = '" + ca.certFile()
                            + "', 'tls-cert' = '" + client.certFile() + "', 'tls-key' = '" + client.keyFile() + "'");
            fixture.assertAnsweredOnce(
                    records, SqlPredictTest.answers(SqlPredictTest.collect(tables.executeSql(SqlPredictTest.PREDICT))));
        }
    }

    @Test
    void withoutAClientCertificateTheJobFailsNamingTheEndpoint() throws Exception {
        Issued ca = issue("test CA", null);
        try (SidecarProcess sidecar = sidecar(ca)) {
            Exception failure = assertThrows(Exception.class, () -> Jobs.collect(Jobs.infer(
                    Jobs.records(Jobs.environment(), fixture, 10, 0),
                    Jobs.inference(sidecar.endpoint())
                            .withConnectTimeout(Duration.ofSeconds(2))
                            .withTls(ca.certFile().toString(), null, null),
                    false,
                    4)));
            String messages = Failures.messages(failure);
            assertTrue(messages.contains("gpu-sidecar at " + sidecar.endpoint()), messages);
        }
    }

    @Test
    void aTlsFileThatCannotBeReadIsNamed() {
        Path missing = folder.resolve("missing-ca.pem");
        IllegalArgumentException refused = assertThrows(
                IllegalArgumentException.class,
                () -> SidecarClient.connect("127.0.0.1:1", "affine",
                        SidecarOptions.defaults().withTls(missing.toString(), null, null)));
        assertTrue(refused.getMessage().startsWith("cannot use tls-ca " + missing), refused.getMessage());
        IllegalArgumentException half = assertThrows(
                IllegalArgumentException.class,
                () -> SidecarOptions.defaults().withTls(null, missing.toString(), null));
        assertTrue(half.getMessage().contains("set both tls-cert and tls-key"), half.getMessage());
    }

    @Test
    void tlsOptionsOnAUnixSocketAreRefused() throws IOException {
        Path ca = Files.writeString(folder.resolve("ca.pem"), "");
        IllegalArgumentException refused = assertThrows(
                IllegalArgumentException.class,
                () -> SidecarClient.connect("unix:" + folder.resolve("s.sock"), "affine",
                        SidecarOptions.defaults().withTls(ca.toString(), null, null)));
        assertTrue(refused.getMessage().contains("for host:port endpoints"), refused.getMessage());
    }
}
