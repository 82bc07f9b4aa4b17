"""Lottery tickets on Fashion-MNIST: iterative magnitude pruning with rewinding.

    python examples/lottery_ticket_fashion_mnist.py
    python examples/lottery_ticket_fashion_mnist.py --rounds 3 --train-samples 12000

Trains LeNet-300-100 (the MLP of Frankle and Carbin, 2019) on Fashion-MNIST,
keeps its weights after `--rewind-step` batches, and then, for each round,
prunes `--rate` of the remaining weights of every layer by magnitude,
rewinds the surviving weights to that early step and trains again. The
control trains the final sparse network from a fresh random initialization:
the lottery-ticket claim is that the rewound ticket trains better.
"""

import argparse

import keras

import keras_pruning as kp
from keras_pruning.datasets import fashion_mnist


def build_mlp():
    return keras.Sequential(
        [
            keras.Input((28, 28)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Flatten(),
            keras.layers.Dense(300, activation="relu"),
            keras.layers.Dense(100, activation="relu"),
            keras.layers.Dense(10),
        ],
        name="lenet_300_100",
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-samples", type=int, default=60_000)
    parser.add_argument("--test-samples", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=2, help="epochs per round")
    parser.add_argument("--rounds", type=int, default=8, help="pruning rounds")
    parser.add_argument(
        "--rate", type=float, default=0.3, help="fraction pruned per round"
    )
    parser.add_argument("--rewind-step", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1.2e-3)
    parser.add_argument(
        "--no-control",
        dest="control",
        action="store_false",
        help="skip the random re-initialization control",
    )
    parser.add_argument(
        "--data", default=None, help="folder with the Fashion-MNIST .gz files"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    (x_train, y_train), (x_test, y_test) = fashion_mnist(args.data)
    x_train, y_train = x_train[: args.train_samples], y_train[: args.train_samples]
    x_test, y_test = x_test[: args.test_samples], y_test[: args.test_samples]
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def train(model, callbacks):
        model.compile(
            keras.optimizers.Adam(args.learning_rate), loss, metrics=["accuracy"]
        )
        model.fit(
            x_train,
            y_train,
            batch_size=args.batch_size,
            epochs=args.epochs,
            verbose=args.verbose,
            callbacks=callbacks,
        )

    def evaluate(model):
        return model.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"]

    ticket = kp.lottery.find_ticket(
        build_mlp(),
        train,
        rounds=args.rounds,
        rate=args.rate,
        rewind_step=args.rewind_step,
        evaluate=evaluate,
    )
    rows = [
        {"round": r.round, "sparsity": r.sparsity, "test_accuracy": r.metrics}
        for r in ticket.rounds
    ]

    control_accuracy = None
    if args.control:
        # The same masks, trained from a fresh random initialization; the
        # ticket's trained weights are put back afterwards.
        trained = kp.lottery.snapshot(ticket.model)
        keras.utils.set_random_seed(args.seed + 1)
        kp.lottery.rewind(ticket.model, kp.lottery.snapshot(build_mlp()))
        train(ticket.model, [kp.UpdatePruningStep()])
        control_accuracy = evaluate(ticket.model)
        kp.lottery.rewind(ticket.model, trained)

    print("round  sparsity  test accuracy")
    for row in rows:
        print(
            f"{row['round']:>5}  {row['sparsity']:>8.1%}  {row['test_accuracy']:>13.2%}"
        )
    if control_accuracy is not None:
        print(
            f"random re-initialization at {rows[-1]['sparsity']:.1%} sparsity: "
            f"{control_accuracy:.2%} (ticket: {rows[-1]['test_accuracy']:.2%})"
        )
    return ticket, rows, control_accuracy


if __name__ == "__main__":
    main()
