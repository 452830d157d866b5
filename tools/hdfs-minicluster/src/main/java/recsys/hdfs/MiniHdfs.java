package recsys.hdfs;

import java.io.File;
import java.io.IOException;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.Arrays;
import java.util.concurrent.CountDownLatch;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FSDataInputStream;
import org.apache.hadoop.fs.FSDataOutputStream;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.hdfs.HdfsConfiguration;
import org.apache.hadoop.hdfs.MiniDFSCluster;
import sun.misc.Signal;

/**
 * A single-node HDFS for tests and development: one NameNode and one DataNode on loopback, WebHDFS on,
 * permissions off, replication 1, 1 MiB blocks (so ordinary test files span several blocks).
 *
 * <p>Usage: {@code MiniHdfs --base-dir DIR --ready-file FILE [--rpc-port 8020] [--http-port 9870]}.
 * The file system is formatted fresh under DIR on every start. Once the cluster is active the ready file
 * is written (atomically) with the addresses as JSON, after a file was written and read back through
 * WebHDFS; on SIGTERM (or Ctrl-C) the ready file is removed
 * and the cluster shut down cleanly, then the process exits 0. Started and stopped by scripts/hdfs-minicluster.sh.
 */
public final class MiniHdfs {
  private static final String HOST = "127.0.0.1";
  private static final long BLOCK_SIZE = 1024L * 1024L;

  private MiniHdfs() {}

  public static void main(String[] args) throws Exception {
    File baseDir = null;
    Path readyFile = null;
    int rpcPort = 8020;
    int httpPort = 9870;
    for (int i = 0; i < args.length; i++) {
      String value = i + 1 < args.length ? args[i + 1] : null;
      switch (args[i]) {
        case "--base-dir" -> baseDir = new File(require(args[i], value));
        case "--ready-file" -> readyFile = Path.of(require(args[i], value));
        case "--rpc-port" -> rpcPort = Integer.parseInt(require(args[i], value));
        case "--http-port" -> httpPort = Integer.parseInt(require(args[i], value));
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

    MiniDFSCluster cluster = new MiniDFSCluster.Builder(conf, baseDir)
        .nameNodePort(rpcPort)
        .nameNodeHttpPort(httpPort)
        .numDataNodes(1)
        .checkDataNodeHostConfig(true)
        .format(true)
        .build();
    cluster.waitActive();
    selfCheck(conf, httpPort);
    double seconds = (System.nanoTime() - started) / 1e9;

    // SIGTERM / SIGINT: shut down from the main thread, not from a JVM shutdown hook (Hadoop removes
    // its own hooks while stopping, which a JVM that is already shutting down refuses).
    CountDownLatch stopRequested = new CountDownLatch(1);
    for (String name : new String[] {"TERM", "INT"}) {
      Signal.handle(new Signal(name), signal -> stopRequested.countDown());
    }

    String json = String.format(
        "{\"namenode\": \"hdfs://%s:%d\", \"webhdfs\": \"http://%s:%d\", \"pid\": %d, \"start_seconds\": %.2f}%n",
        HOST, cluster.getNameNodePort(), HOST, cluster.getNameNode().getHttpAddress().getPort(),
        ProcessHandle.current().pid(), seconds);
    Path tmp = readyFile.resolveSibling(readyFile.getFileName() + ".tmp");
    Files.writeString(tmp, json, StandardCharsets.UTF_8);
    Files.move(tmp, readyFile, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
    System.err.printf("MiniHdfs: ready after %.1f s: %s", seconds, json);

    stopRequested.await();
    System.err.println("MiniHdfs: stopping");
    Files.deleteIfExists(readyFile);
    cluster.shutdown();
    System.err.println("MiniHdfs: stopped");
    System.exit(0);
  }

  /** A write and a read through WebHDFS, as the product makes them: ready means usable. */
  private static void selfCheck(Configuration conf, int httpPort) throws IOException {
    URI uri = URI.create("webhdfs://" + HOST + ":" + httpPort);
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
    System.err.println("usage: MiniHdfs --base-dir DIR --ready-file FILE [--rpc-port 8020] [--http-port 9870]");
    System.exit(2);
  }
}
