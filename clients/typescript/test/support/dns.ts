// A DNS server on loopback that answers one name with the A records a test gives (a name with a record per
// replica), so a test resolves such a name without touching the machine's /etc/hosts or resolvers. It speaks
// just enough of RFC 1035 over UDP: an A query for the name gets the addresses; anything else none.

import { createSocket, type Socket } from "node:dgram";

const TYPE_A = 1;
const CLASS_IN = 1;

/** The response to one query packet. */
function answer(query: Buffer, name: string, addresses: readonly string[]): Buffer {
  const labels: string[] = [];
  let at = 12;
  while ((query[at] ?? 0) !== 0) {
    const length = query[at] ?? 0;
    labels.push(query.subarray(at + 1, at + 1 + length).toString("ascii").toLowerCase());
    at += 1 + length;
  }
  const type = query.readUInt16BE(at + 1);
  const klass = query.readUInt16BE(at + 3);
  const question = query.subarray(12, at + 5);
  const asked = labels.join(".");
  const records: Buffer[] = [];
  if (asked === name && type === TYPE_A && klass === CLASS_IN) {
    for (const address of addresses) {
      const record = Buffer.alloc(16);
      // The name as a pointer to the question's, then type, class, TTL, length and the address.
      record.writeUInt16BE(0xc00c, 0);
      record.writeUInt16BE(TYPE_A, 2);
      record.writeUInt16BE(CLASS_IN, 4);
      record.writeUInt32BE(1, 6);
      record.writeUInt16BE(4, 10);
      address.split(".").forEach((part, index) => record.writeUInt8(Number(part), 12 + index));
      records.push(record);
    }
  }
  const header = Buffer.alloc(12);
  header.writeUInt16BE(query.readUInt16BE(0), 0);
  header.writeUInt16BE(asked === name ? 0x8180 : 0x8183, 2);
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(records.length, 6);
  return Buffer.concat([header, question, ...records]);
}

/** Answers `name` with `addresses` on 127.0.0.1:port (UDP) until closed. */
export class DnsServer {
  private constructor(
    private readonly socket: Socket,
    readonly port: number,
  ) {}

  static async start(name: string, addresses: readonly string[]): Promise<DnsServer> {
    const socket = createSocket("udp4");
    socket.on("message", (query, peer) => {
      try {
        socket.send(answer(query, name, addresses), peer.port, peer.address);
      } catch {
        // Not a query this server reads: no answer, as from a server that dropped it.
      }
    });
    await new Promise<void>((bound) => socket.bind(0, "127.0.0.1", bound));
    return new DnsServer(socket, socket.address().port);
  }

  close(): void {
    this.socket.close();
  }
}
