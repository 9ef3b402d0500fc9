"""Two short texts written for klest (public domain, CC0): the tiny models' training data.

``REFERENCE_TEXT`` (plain descriptive prose about a harbour town) trains the tokenizer and the
reference model; ``POLICY_TEXT`` (a ship's log, another register) is what the policy is
fine-tuned on, a few optimisation steps away from the reference. Shipping them as strings keeps
everything offline and the same on every Python version (the stdlib's own texts change between
releases). One document per line: the models learn to end a response with the end-of-text token.
"""

REFERENCE_TEXT = """\
The harbour town lies at the mouth of a slow river, where the water turns from brown to green.
In the morning the fishing boats go out before the sun is up, and the gulls follow them.
The market opens at seven, and the first stalls sell bread, cheese, apples and fresh fish.
An old stone bridge crosses the river near the church; children sit on its wall to watch the boats.
The streets are narrow and steep, and most of the houses are painted white or pale blue.
In the summer the town is full of visitors, who walk along the harbour wall and eat ice cream.
In the winter the wind comes from the sea, the cafes close early, and the town is quiet again.
The school stands at the top of the hill, next to the library and the small museum.
The museum keeps old maps, a model of the lighthouse, and the logbooks of ships that sailed here.
Every Saturday there is a band in the square, and people dance when the weather is kind.
The baker starts work at four in the morning, and the smell of bread fills the lower street.
The river is wide and shallow at low tide, and herons stand in the mud to wait for fish.
A path follows the river inland, through fields and woods, to the next village.
The village has a mill, a farm shop, and a pub with a garden that looks over the water.
People in the town like to talk about the weather, the tides, and the price of fish.
The lighthouse on the point was built of grey stone more than two hundred years ago.
Its light turns all night, and on a clear evening it can be seen from far out at sea.
The keeper's cottage is now a small cafe, and the garden is full of flowers in the spring.
On windy days the waves break over the rocks below the lighthouse, and the spray is white.
The old railway line is now a path for walkers and bicycles, and it runs along the coast.
The station building is a bookshop, and the platform is a garden with benches and trees.
In the autumn the leaves turn red and gold, and the evenings come early.
The fishermen mend their nets on the quay, and they tell stories about storms and big catches.
The town council meets on the first Monday of the month in the hall above the post office.
The post office also sells newspapers, stamps, sweets and postcards of the harbour.
There is a doctor, a dentist, and a chemist on the main street, and a garage near the bridge.
The bus to the city leaves from the square every hour, and the journey takes forty minutes.
Many people who work in the city come home on the evening bus, tired and glad to see the sea.
At night the harbour is calm, and the lights of the houses shine on the water.
The tide comes in twice a day, and the boats rise and fall against the harbour wall.
When the tide is out the children look for crabs and shells among the rocks.
The beach is small and sandy, with a stream that runs across it to the sea.
Dogs run on the sand in the early morning, before the visitors arrive.
The hotel on the cliff has a long terrace where guests drink tea and look at the view.
The view from the cliff path is wide, and on a clear day you can see the islands.
The islands are home to seals and sea birds, and boats take visitors out to see them in the summer.
The people of the town are proud of their harbour, their river and their long history.
They keep the old stories alive, and they tell them to every child who will listen.
The church bells ring on Sunday morning, and the sound carries across the water.
The town has changed slowly over the years, but the sea and the river have not changed at all.
"""

POLICY_TEXT = """\
Day one. Wind from the west, fresh. We left the harbour at dawn with the tide and set all sails.
Day two. Wind west, strong. Heavy sea. The ship rolled all night and the cook lost two pots.
Day three. Wind north west, moderate. Clear sky. We saw the islands to the south at noon.
Day four. Wind north, light. Calm sea. The crew mended sails and washed the deck.
Day five. Wind north east, fresh. Rain in the morning. We sighted a ship to the east at four.
Day six. Wind east, strong. Rough sea. We took in the top sails and ran before the wind.
Day seven. Wind east, moderate. Fog at dawn. We heard the bell of a buoy and changed course.
Day eight. Wind south east, light. Fair weather. We caught fish and the crew ate well.
Day nine. Wind south, fresh. Cloud. The mate reported water in the hold and the pumps were manned.
Day ten. Wind south west, strong. Squalls. We lost a sail in the night and set a new one at dawn.
Day eleven. Wind west, moderate. Clear. We saw land at noon and the crew gave a cheer.
Day twelve. Wind west, light. Calm. We came into the harbour on the evening tide and dropped anchor.
"""

#: prompts for the responses: openings of sentences in the two registers
PROMPTS = (
    "The harbour",
    "In the morning",
    "The river",
    "Day three. Wind",
    "The lighthouse",
    "Day eight.",
    "The old",
    "We saw",
)
