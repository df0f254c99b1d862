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
import io.grpc.ManagedChannel;
import io.grpc.Status;
import io.grpc.netty.shaded.io.grpc.netty.GrpcSslContexts;
import io.grpc.netty.shaded.io.grpc.netty.NettyChannelBuilder;
import io.grpc.netty.shaded.io.netty.bootstrap.Bootstrap;
import io.grpc.netty.shaded.io.netty.channel.EventLoopGroup;
import io.grpc.netty.shaded.io.netty.channel.epoll.EpollDomainSocketChannel;
import io.grpc.netty.shaded.io.netty.channel.epoll.EpollEventLoopGroup;
import io.grpc.netty.shaded.io.netty.channel.unix.DomainSocketAddress;
import io.grpc.netty.shaded.io.netty.handler.ssl.SslContext;
import io.grpc.netty.shaded.io.netty.handler.ssl.SslContextBuilder;
import java.io.File;
import io.grpc.netty.shaded.io.netty.util.internal.logging.InternalLoggerFactory;
import io.grpc.netty.shaded.io.netty.util.internal.logging.JdkLoggerFactory;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.concurrent.ThreadFactory;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * The gRPC channel to one sidecar: a Unix socket (built by hand on Netty's epoll transport,
 * so that it survives shading) or TCP, with its event loop, and the words for what went wrong
 * on it. Owned by a {@link SidecarClient}.
 */
final class SidecarChannel implements AutoCloseable {
    /**
     * gRPC asks every connection for SO_KEEPALIVE, which Netty's Unix-socket channel does not
     * have; Netty's Bootstrap then warns "Unknown channel option 'SO_KEEPALIVE'" on every
     * connect and reconnect, through SLF4J into the TaskManager's log when SLF4J is there (as
     * in Flink). So the (shaded, ours alone) Bootstrap class gets a java.util.logging logger,
     * set to SEVERE; every other Netty class logs as before. Held here, as java.util.logging
     * keeps loggers only weakly.
     */
    private static final java.util.logging.Logger BOOTSTRAP_LOG =
            java.util.logging.Logger.getLogger(Bootstrap.class.getName());

    /**
     * Gives Netty's Bootstrap its quiet logger; {@link SidecarClient} calls it when it is
     * loaded, before Bootstrap is, so that Bootstrap takes it when it is initialised.
     */
    static synchronized void quietNettyBootstrap() {
        BOOTSTRAP_LOG.setLevel(java.util.logging.Level.SEVERE);
        InternalLoggerFactory previous = InternalLoggerFactory.getDefaultFactory();
        InternalLoggerFactory.setDefaultFactory(JdkLoggerFactory.INSTANCE);
        try {
            // Bootstrap takes its logger from the default factory when it is initialised.
            Class.forName(Bootstrap.class.getName(), true, SidecarChannel.class.getClassLoader());
        } catch (ClassNotFoundException e) {
            throw new ExceptionInInitializerError(e);
        } finally {
            InternalLoggerFactory.setDefaultFactory(previous);
        }
    }

    private final Endpoint endpoint;
    private final EventLoopGroup eventLoops;
    private final ManagedChannel channel;

    /** A channel to {@code endpoint}; over TLS with {@code tls} (null: plaintext). */
    SidecarChannel(Endpoint endpoint, SidecarOptions.TlsFiles tls) {
        this.endpoint = endpoint;
        if (tls != null && endpoint.isUnix()) {
            throw new IllegalArgumentException(
                    "TLS (tls-ca, tls-cert, tls-key) is for host:port endpoints, not " + endpoint
                            + ": a Unix socket is guarded by its file's mode");
        }
        SslContext ssl = tls == null ? null : sslContext(tls);
        NettyChannelBuilder builder;
        if (endpoint.isUnix()) {
            eventLoops = new EpollEventLoopGroup(1, daemonThreads("gpu-sidecar-client-io"));
            builder =
                    NettyChannelBuilder.forAddress(new DomainSocketAddress(endpoint.socketPath()))
                            .eventLoopGroup(eventLoops)
                            .channelType(EpollDomainSocketChannel.class);
        } else {
            eventLoops = null;
            builder = NettyChannelBuilder.forAddress(endpoint.host(), endpoint.port());
        }
        if (ssl == null) {
            builder.usePlaintext();
        } else {
            builder.sslContext(ssl);
        }
        // gRPC's callbacks run on the I/O thread that read the message (direct executor): the
        // client only matches an answer to its request there and hands it on
        // (SidecarClient's answering thread decodes it).
        channel =
                builder.directExecutor()
                        .maxInboundMessageSize(Integer.MAX_VALUE)
                        .build();
    }

    Endpoint endpoint() {
        return endpoint;
    }

    /** The client's TLS context from PEM files; a file that cannot be used is named. */
    private static SslContext sslContext(SidecarOptions.TlsFiles tls) {
        SslContextBuilder builder = GrpcSslContexts.forClient();
        String step = "tls-ca " + tls.caFile();
        try {
            if (!tls.caFile().isEmpty()) {
                builder.trustManager(new File(tls.caFile()));
            }
            if (!tls.certFile().isEmpty()) {
                step = "tls-cert " + tls.certFile() + " and tls-key " + tls.keyFile();
                builder.keyManager(new File(tls.certFile()), new File(tls.keyFile()));
            }
            step = "the TLS context";
            return builder.build();
        } catch (javax.net.ssl.SSLException | IllegalArgumentException e) {
            throw new IllegalArgumentException(
                    "cannot use " + step + ": " + e.getMessage()
                            + " (PEM files: the CA's certificate; the client's certificate and its PKCS#8 key)",
                    e);
        }
    }

    ManagedChannel channel() {
        return channel;
    }

    /** Connects again now, not after the channel's own (longer) backoff. */
    void connectNow() {
        channel.resetConnectBackoff();
    }

    /** A status with its description and causes, for messages. */
    static String describe(Status status) {
        StringBuilder text = new StringBuilder(status.getCode().name());
        if (status.getDescription() != null) {
            text.append(": ").append(status.getDescription());
        }
        for (Throwable cause = status.getCause(); cause != null; cause = cause.getCause()) {
            if (cause.getMessage() != null) {
                text.append(" (").append(cause.getMessage()).append(')');
            }
        }
        return text.toString();
    }

    /** What the endpoint looks like from here, since gRPC's "io exception" does not say. */
    String whereItListens() {
        if (!endpoint.isUnix()) {
            return "is the sidecar listening on " + endpoint + " (sidecar.rpc.endpoint)?";
        }
        Path socket = Paths.get(endpoint.socketPath());
        if (!Files.exists(socket)) {
            return "there is no socket file " + socket + ": is the sidecar running, with"
                    + " sidecar.rpc.endpoint = \"" + endpoint + "\"?";
        }
        if (Files.isDirectory(socket) || Files.isRegularFile(socket)) {
            return socket + " is not a socket";
        }
        return "the socket file " + socket + " is there, but nothing answered on it"
                + " (a sidecar still starting, or one that died and left it)";
    }

    /** Releases the channel and its event loop. */
    @Override
    public void close() {
        channel.shutdownNow();
        try {
            channel.awaitTermination(5, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        if (eventLoops != null) {
            eventLoops.shutdownGracefully(0, 1, TimeUnit.SECONDS);
        }
    }

    /** Daemon threads named {@code name-N}. */
    static ThreadFactory daemonThreads(String name) {
        AtomicInteger count = new AtomicInteger();
        return runnable -> {
            Thread thread = new Thread(runnable, name + "-" + count.incrementAndGet());
            thread.setDaemon(true);
            return thread;
        };
    }
}
