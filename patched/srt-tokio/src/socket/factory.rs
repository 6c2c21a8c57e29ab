use std::time::Instant;

use bytes::Bytes;
use futures::{channel::mpsc, prelude::*, select, stream::StreamExt};
use log::error;
use srt_protocol::connection::{Action, Connection, ConnectionSettings, DuplexConnection, Input};
use tokio::{task::JoinHandle, time::sleep_until};

use crate::{net::PacketSocket, watch, SocketStatistics, SrtSocket};

/// PRISM PATCH: messages from the application taken in one turn of the
/// session loop at most (see `run_handler_loop`).
const MAX_DATA_PER_TURN: usize = 64;

struct SrtSocketState {
    socket: PacketSocket,
    connection: DuplexConnection,
    statistics_sender: watch::Sender<SocketStatistics>,
    output_data_sender: mpsc::Sender<(Instant, Bytes)>,
    input_data_receiver: mpsc::Receiver<(Instant, Bytes)>,
}

impl SrtSocketState {
    pub async fn run_loop(self) {
        // Using run_input_loop breaks a couple of the stransmit_interop tests.
        // Both stransmit_decrypt and stransmit_server run indefinitely. For now,
        // run_handler_loop exclusively, until a fix is found or an API decision
        // is reached.
        if Instant::now().elapsed().as_nanos() != 0 {
            self.run_handler_loop().await;
        } else {
            self.run_input_loop().await;
        }
    }

    async fn run_handler_loop(self) {
        let mut socket = self.socket;
        let mut input_data = self.input_data_receiver.fuse();
        let mut output_data = self.output_data_sender;
        let mut connection = self.connection;
        let statistics_sender = self.statistics_sender;
        // PRISM PATCH: one timer for the task's life, moved only when the
        // connection's next deadline moves, and a select without a random
        // start. Upstream registered a new timer in tokio's wheel and drew a
        // random number on every turn, once per datagram received.
        let sleep = sleep_until(Instant::now().into());
        tokio::pin!(sleep);
        let mut deadline = None;
        while connection.is_open() {
            // PRISM PATCH: the clock is read once for what a turn sends and
            // once for what it handles, not for every packet and message.
            let now = Instant::now();
            if connection.should_update_statistics(now) {
                let _ = statistics_sender.send(connection.statistics().clone());
            }

            // PRISM PATCH: the turn's packets are written together (UDP GSO
            // where the kernel has it, see `net::batch`), not one `sendto`
            // each.
            while let Some(packet) = connection.next_packet(now) {
                if socket.queue(packet) {
                    if let Err(e) = socket.flush().await {
                        error!("Error while sending packets: {:?}", e);
                    }
                }
            }
            if let Err(e) = socket.flush().await {
                error!("Error while sending packets: {:?}", e);
            }

            let now = Instant::now();
            while let Some(data) = connection.next_data(now) {
                if output_data.is_closed() {
                    continue;
                }
                if let Err(e) = output_data.send(data).await {
                    error!("Error while releasing packet {:?}", e);
                }
            }

            let timeout = connection.check_timers(now);
            if deadline != Some(timeout) {
                sleep.as_mut().reset(timeout.into());
                deadline = Some(timeout);
            }

            let input = tokio::select! {
                biased;
                // new packet received
                packet = socket.receive() => Input::Packet(packet),
                // new packet queued
                data = input_data.next() => Input::Data(data),
                // one of the entities requested wakeup
                () = &mut sleep => Input::Timer,
            };

            let now = Instant::now();
            match input {
                Input::Packet(packet) => connection.handle_packet_input(now, packet),
                Input::Data(data) => {
                    let mut more = data.is_some();
                    connection.handle_data_input(now, data);
                    // PRISM PATCH: the application's messages already queued
                    // are taken in the same turn (up to a GSO send's worth),
                    // so their packets go out together instead of a turn,
                    // and a send, each.
                    for _ in 0..MAX_DATA_PER_TURN {
                        if !more {
                            break;
                        }
                        match input_data.next().now_or_never() {
                            Some(data) => {
                                more = data.is_some();
                                connection.handle_data_input(now, data);
                            }
                            None => break,
                        }
                    }
                }
                _ => {}
            }
        }
        if let Err(e) = output_data.close().await {
            error!("Error while closing data output stream {:?}", e);
        }
    }

    async fn run_input_loop(self) {
        let mut socket = self.socket;
        let mut input_data = self.input_data_receiver.fuse();
        let mut output_data = self.output_data_sender;
        let mut connection = self.connection;
        let statistics_sender = self.statistics_sender;
        let mut input = Input::Timer;
        loop {
            let now = Instant::now();
            input = match connection.handle_input(now, input) {
                Action::Close => break,
                Action::ReleaseData(data) => {
                    if !output_data.is_closed() {
                        if let Err(e) = output_data.send(data).await {
                            error!("Error while releasing data {:?}", e);
                        }
                    }
                    Input::DataReleased
                }
                Action::SendPacket(packet) => {
                    if let Err(e) = socket.send(packet).await {
                        error!("Error while seding packet: {:?}", e); // TODO: real error handling
                    }
                    Input::PacketSent
                }
                Action::UpdateStatistics(statistics) => {
                    let _ = statistics_sender.send(statistics.clone());
                    Input::StatisticsUpdated
                }
                Action::WaitForData(wait) => {
                    let timeout = now + wait;
                    select! {
                        _ = sleep_until(timeout.into()).fuse() => Input::Timer,
                        packet = socket.receive().fuse() =>
                            Input::Packet(packet),
                        res = input_data.next() => {
                            Input::Data(res)
                        }
                    }
                }
            }
        }
        if let Err(e) = output_data.close().await {
            error!("Error while closing data output stream {:?}", e);
        }
    }
}

#[derive(Debug)]
pub struct SrtSocketFactory {
    output_data_receiver: mpsc::Receiver<(Instant, Bytes)>,
    input_data_sender: mpsc::Sender<(Instant, Bytes)>,
    statistics_receiver: watch::Receiver<SocketStatistics>,
}

impl SrtSocketFactory {
    pub fn create_socket(self, settings: ConnectionSettings, task: JoinHandle<()>) -> SrtSocket {
        SrtSocket {
            settings,
            output_data_receiver: self.output_data_receiver.peekable(),
            input_data_sender: self.input_data_sender,
            statistics_receiver: self.statistics_receiver,
            task,
        }
    }
}

#[derive(Debug)]
pub struct SrtSocketTaskFactory {
    output_data_sender: mpsc::Sender<(Instant, Bytes)>,
    input_data_receiver: mpsc::Receiver<(Instant, Bytes)>,
    statistics_sender: watch::Sender<SocketStatistics>,
}

impl SrtSocketTaskFactory {
    pub fn spawn_task(
        self,
        socket: PacketSocket,
        connection: Connection,
    ) -> (JoinHandle<()>, ConnectionSettings) {
        let settings = connection.settings.clone();

        let state = SrtSocketState {
            socket,
            connection: DuplexConnection::new(connection),
            statistics_sender: self.statistics_sender,
            output_data_sender: self.output_data_sender,
            input_data_receiver: self.input_data_receiver,
        };

        // PRISM PATCH: a panic in the session's loop is caught and reported.
        let handle = tokio::spawn(crate::supervise::supervised(
            "srt_connection",
            state.run_loop(),
        ));

        (handle, settings)
    }
}

pub fn split_new() -> (SrtSocketFactory, SrtSocketTaskFactory) {
    let (output_data_sender, output_data_receiver) = mpsc::channel(128);
    let (input_data_sender, input_data_receiver) = mpsc::channel(128);
    let (statistics_sender, statistics_receiver) = watch::channel();

    let socket_factory = SrtSocketFactory {
        output_data_receiver,
        input_data_sender,
        statistics_receiver,
    };

    let state_factory = SrtSocketTaskFactory {
        output_data_sender,
        input_data_receiver,
        statistics_sender,
    };

    (socket_factory, state_factory)
}
