package recsys.hdfs;

import java.io.File;
import java.io.IOException;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.security.PrivilegedExceptionAction;
import java.util.Arrays;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FSDataInputStream;
import org.apache.hadoop.fs.FSDataOutputStream;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.hdfs.HdfsConfiguration;
import org.apache.hadoop.hdfs.MiniDFSCluster;
import org.apache.hadoop.minikdc.MiniKdc;
import org.apache.hadoop.security.UserGroupInformation;
import sun.misc.Signal;

/**
 * A single-node HDFS for tests and development: one NameNode and one DataNode on loopback, WebHDFS on,
 * permissions off, replication 1, 1 MiB blocks (so ordinary test files span several blocks).
 *
 * <p>Usage: {@code MiniHdfs --base-dir DIR --ready-file FILE [--rpc-port 8020] [--http-port 9870]
 * [--kerberos DIR]}. With {@code --kerberos} the cluster is secure, as a Kerberized production cluster:
 * an in-process KDC (Hadoop's MiniKdc) on loopback, service principals {@code hdfs/localhost} and
 * {@code HTTP/localhost} in {@code DIR/hdfs.keytab}, a client principal {@code recsys} in
 * {@code DIR/recsys.keytab}, a client krb5.conf at {@code DIR/krb5.conf}; Kerberos authentication of
 * RPC, SPNEGO on WebHDFS, block access tokens and SASL (authentication) on data transfer. Secure
 * DataNode ports are waived with Hadoop's {@code ignore.secure.ports.for.testing} (no root, no HTTPS).
 * The file system is formatted fresh under DIR on every start. Once the cluster is active the ready file
 * is written (atomically) with the addresses as JSON, after a file was written and read back through
 * WebHDFS; on SIGTERM (or Ctrl-C) the ready file is removed
 * and the cluster shut down cleanly, then the process exits 0. Started and stopped by scripts/hdfs-minicluster.sh.
 */
public final class MiniHdfs {
  private static final String HOST = "127.0.0.1";
  private static final long BLOCK_SIZE = 1024L * 1024L;

  private MiniHdfs() {}

  public static void main(String[] args) {
    try {
      run(args);
    } catch (Exception | Error err) {
      // Hadoop's non-daemon threads would keep a failed start alive until the script's time-out
      err.printStackTrace();
      System.err.println("MiniHdfs: start-up failed: " + err);
      System.exit(1);
    }
  }

  private static void run(String[] args) throws Exception {
    File baseDir = null;
    Path readyFile = null;
    int rpcPort = 8020;
    int httpPort = 9870;
    File kerberosDir = null;
    for (int i = 0; i < args.length; i++) {
      String value = i + 1 < args.length ? args[i + 1] : null;
      switch (args[i]) {
        case "--base-dir" -> baseDir = new File(require(args[i], value));
        case "--ready-file" -> readyFile = Path.of(require(args[i], value));
        case "--rpc-port" -> rpcPort = Integer.parseInt(require(args[i], value));
        case "--http-port" -> httpPort = Integer.parseInt(require(args[i], value));
        case "--kerberos" -> kerberosDir = new File(require(args[i], value));
        default -> usage("unknown argument " + args[i]);
      }
      i++;
    }
    if (baseDir == null || readyFile == null) {
      usage("--base-dir and --ready-file are required");
    }
    Files.deleteIfExists(readyFile);

    long started = System.nanoTime();
    Configuration conf = new HdfsConfiguration();
    conf.setBoolean("dfs.permissions.enabled", false);
    conf.setInt("dfs.replication", 1);
    conf.setLong("dfs.blocksize", BLOCK_SIZE);
    conf.setBoolean("dfs.webhdfs.enabled", true);
    // WebHDFS redirects reads and writes to the DataNode by its registered host name: make that the
    // loopback address, so a client on this machine never depends on how the host name resolves.
    conf.set("dfs.datanode.hostname", HOST);
    conf.set("hadoop.tmp.dir", new File(baseDir, "tmp").getAbsolutePath());
    // closing a file polls the NameNode until the DataNode reported the last block, first after 400 ms
    // by default: a test run writes thousands of small files, so poll sooner
    conf.setInt("dfs.client.block.write.locateFollowingBlock.initial.delay.ms", 10);
    Kerberos kerberos = kerberosDir == null ? null : Kerberos.start(kerberosDir, conf);

    MiniDFSCluster cluster = new MiniDFSCluster.Builder(conf, baseDir)
        .nameNodePort(rpcPort)
        .nameNodeHttpPort(httpPort)
        .numDataNodes(1)
        .checkDataNodeHostConfig(true)
        .format(true)
        .build();
    cluster.waitActive();
    if (kerberos == null) {
      selfCheck(conf, HOST, httpPort);
    } else {
      if (cluster.getDataNodes().get(0).getDnConf().getSaslPropsResolver() == null) {
        throw new IllegalStateException("the DataNode does not protect data transfer with SASL");
      }
      // the self-check as the client principal, through SPNEGO, as the Python client will do it
      final int port = httpPort;
      UserGroupInformation.loginUserFromKeytabAndReturnUGI(kerberos.clientPrincipal, kerberos.clientKeytab.getPath())
          .doAs((PrivilegedExceptionAction<Void>) () -> {
            selfCheck(conf, "localhost", port);
            return null;
          });
    }
    double seconds = (System.nanoTime() - started) / 1e9;

    // SIGTERM / SIGINT: shut down from the main thread, not from a JVM shutdown hook (Hadoop removes
    // its own hooks while stopping, which a JVM that is already shutting down refuses).
    CountDownLatch stopRequested = new CountDownLatch(1);
    for (String name : new String[] {"TERM", "INT"}) {
      Signal.handle(new Signal(name), signal -> stopRequested.countDown());
    }

    // SPNEGO names the service by the URL's host: on a Kerberized cluster that is localhost (HTTP/localhost)
    String webHost = kerberos == null ? HOST : "localhost";
    String json = String.format(
        "{\"namenode\": \"hdfs://%s:%d\", \"webhdfs\": \"http://%s:%d\", \"pid\": %d, \"start_seconds\": %.2f%s}%n",
        HOST, cluster.getNameNodePort(), webHost, cluster.getNameNode().getHttpAddress().getPort(),
        ProcessHandle.current().pid(), seconds, kerberos == null ? "" : kerberos.json());
    Path tmp = readyFile.resolveSibling(readyFile.getFileName() + ".tmp");
    Files.writeString(tmp, json, StandardCharsets.UTF_8);
    Files.move(tmp, readyFile, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
    System.err.printf("MiniHdfs: ready after %.1f s: %s", seconds, json);

    stopRequested.await();
    System.err.println("MiniHdfs: stopping");
    Files.deleteIfExists(readyFile);
    cluster.shutdown();
    if (kerberos != null) {
      kerberos.kdc.stop();
    }
    System.err.println("MiniHdfs: stopped");
    System.exit(0);
  }

  /** A write and a read through WebHDFS, as the product makes them: ready means usable. */
  private static void selfCheck(Configuration conf, String host, int httpPort) throws IOException {
    URI uri = URI.create("webhdfs://" + host + ":" + httpPort);
    org.apache.hadoop.fs.Path probe = new org.apache.hadoop.fs.Path("/tmp/.minihdfs-self-check");
    byte[] expected = "ready".getBytes(StandardCharsets.UTF_8);
    try (FileSystem fs = FileSystem.newInstance(uri, conf)) {
      try (FSDataOutputStream out = fs.create(probe, true)) {
        out.write(expected);
      }
      byte[] actual = new byte[expected.length];
      try (FSDataInputStream in = fs.open(probe)) {
        in.readFully(actual);
      }
      if (!Arrays.equals(expected, actual)) {
        throw new IOException("WebHDFS self-check read back different bytes");
      }
      fs.delete(probe, false);
    }
  }

  private static String require(String flag, String value) {
    if (value == null) {
      usage(flag + " needs a value");
    }
    return value;
  }

  private static void usage(String problem) {
    System.err.println("MiniHdfs: " + problem);
    System.err.println("usage: MiniHdfs --base-dir DIR --ready-file FILE [--rpc-port 8020] [--http-port 9870] [--kerberos DIR]");
    System.exit(2);
  }

  /** The KDC of a secure cluster, its principals and keytabs, and the cluster's security settings. */
  private static final class Kerberos {
    final MiniKdc kdc;
    final String clientPrincipal;
    final File clientKeytab;
    final File krb5Conf;

    private Kerberos(MiniKdc kdc, String clientPrincipal, File clientKeytab, File krb5Conf) {
      this.kdc = kdc;
      this.clientPrincipal = clientPrincipal;
      this.clientKeytab = clientKeytab;
      this.krb5Conf = krb5Conf;
    }

    static Kerberos start(File dir, Configuration conf) throws Exception {
      Files.createDirectories(dir.toPath());
      Properties kdcConf = MiniKdc.createConf();
      kdcConf.setProperty(MiniKdc.KDC_BIND_ADDRESS, HOST);
      kdcConf.setProperty(MiniKdc.KDC_PORT, "0");
      MiniKdc kdc = new MiniKdc(kdcConf, dir);
      kdc.start();
      String realm = kdc.getRealm();
      File serviceKeytab = new File(dir, "hdfs.keytab");
      kdc.createPrincipal(serviceKeytab, "hdfs/localhost", "HTTP/localhost");
      File clientKeytab = new File(dir, "recsys.keytab");
      kdc.createPrincipal(clientKeytab, "recsys");
      // for MIT Kerberos clients (kinit, Python's gssapi): no DNS, the service host as written in the URL
      File krb5Conf = new File(dir, "krb5.conf");
      String text = "[libdefaults]\n"
          + "  default_realm = " + realm + "\n"
          + "  udp_preference_limit = 1\n"
          + "  dns_lookup_kdc = false\n"
          + "  dns_lookup_realm = false\n"
          + "  dns_canonicalize_hostname = false\n"
          + "  rdns = false\n"
          + "  forwardable = true\n"
          + "[realms]\n"
          + "  " + realm + " = {\n    kdc = " + HOST + ":" + kdc.getPort() + "\n  }\n"
          + "[domain_realm]\n"
          + "  localhost = " + realm + "\n";
      Files.writeString(krb5Conf.toPath(), text, StandardCharsets.UTF_8);

      String service = "hdfs/localhost@" + realm;
      conf.set("hadoop.security.authentication", "kerberos");
      conf.set("dfs.namenode.kerberos.principal", service);
      conf.set("dfs.namenode.keytab.file", serviceKeytab.getAbsolutePath());
      conf.set("dfs.datanode.kerberos.principal", service);
      conf.set("dfs.datanode.keytab.file", serviceKeytab.getAbsolutePath());
      conf.set("dfs.web.authentication.kerberos.principal", "HTTP/localhost@" + realm);
      conf.set("dfs.web.authentication.kerberos.keytab", serviceKeytab.getAbsolutePath());
      // WebHDFS's filter (AuthFilterInitializer) reads hadoop.http.authentication.*: SPNEGO, no anonymous access
      conf.set("hadoop.http.authentication.type", "kerberos");
      conf.set("hadoop.http.authentication.kerberos.principal", "HTTP/localhost@" + realm);
      conf.set("hadoop.http.authentication.kerberos.keytab", serviceKeytab.getAbsolutePath());
      conf.setBoolean("hadoop.http.authentication.simple.anonymous.allowed", false);
      conf.setBoolean("dfs.block.access.token.enable", true);
      conf.set("dfs.data.transfer.protection", "authentication");
      // a secure DataNode needs privileged ports or HTTPS; this test cluster waives that, as Hadoop's tests do
      conf.setBoolean("ignore.secure.ports.for.testing", true);
      UserGroupInformation.setConfiguration(conf);
      return new Kerberos(kdc, "recsys@" + realm, clientKeytab, krb5Conf);
    }

    String json() {
      return String.format(
          ", \"realm\": \"%s\", \"kdc\": \"%s:%d\", \"krb5_conf\": \"%s\", \"client_principal\": \"%s\", "
              + "\"client_keytab\": \"%s\"",
          kdc.getRealm(), kdc.getHost(), kdc.getPort(), krb5Conf.getAbsolutePath(), clientPrincipal,
          clientKeytab.getAbsolutePath());
    }
  }
}
