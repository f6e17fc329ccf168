// An HTTP server on the JVM for scripts/bench.mjs (group "apps"): GET / answers "hello" and the
// pid, from the JDK's own com.sun.net.httpserver. It listens on a port the kernel picks on
// 127.0.0.1 and prints "listening PORT" once it accepts. Compiled by the bench with javac into
// its temporary directory, where a JDK is installed.
import com.sun.net.httpserver.HttpServer;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;

public class HelloServer {
  public static void main(String[] args) throws Exception {
    HttpServer server = HttpServer.create(new InetSocketAddress("127.0.0.1", 0), 16);
    long pid = ProcessHandle.current().pid();
    server.createContext("/", exchange -> {
      byte[] body = ("hello " + pid + "\n").getBytes(StandardCharsets.UTF_8);
      exchange.sendResponseHeaders(200, body.length);
      exchange.getResponseBody().write(body);
      exchange.close();
    });
    server.start();
    System.out.println("listening " + server.getAddress().getPort());
    System.out.flush();
  }
}
